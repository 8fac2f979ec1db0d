//! SQL (and Redis/Mongo) statement classes: DROP, TRUNCATE, DELETE or UPDATE
//! without WHERE, FLUSHALL/FLUSHDB, dropDatabase(). Statements are split at
//! `;` outside quotes and comments; only the leading keywords are read.

use super::Class;

/// The destructive classes in `text`, each with the statement's first words.
pub fn classify(text: &str) -> Vec<(Class, String)> {
    let mut out = Vec::new();
    for statement in statements(text) {
        let upper = statement.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        let head = words.iter().take(4).copied().collect::<Vec<_>>().join(" ");
        let class = match words.first().copied() {
            Some("DROP") => Some(Class::DbDrop),
            Some("TRUNCATE") => Some(Class::DbTruncate),
            Some("ALTER") if words.contains(&"DROP") => Some(Class::DbDrop),
            Some("DELETE") if !words.contains(&"WHERE") => Some(Class::DbDeleteAll),
            Some("UPDATE") if !words.contains(&"WHERE") => Some(Class::DbUpdateAll),
            Some("FLUSHALL") | Some("FLUSHDB") => Some(Class::DbFlush),
            // `WITH x AS (...) DELETE FROM t` still deletes.
            Some("WITH") if words.contains(&"DELETE") && !words.contains(&"WHERE") => {
                Some(Class::DbDeleteAll)
            }
            _ => None,
        };
        if let Some(class) = class {
            out.push((class, head));
        }
        out.extend(mongo(&statement));
    }
    out
}

/// Mongo shell calls: `db.dropDatabase()`, `db.users.drop()`, `deleteMany({})`.
fn mongo(statement: &str) -> Vec<(Class, String)> {
    let compact: String = statement.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    if compact.contains("dropDatabase(") {
        out.push((Class::DbDrop, "dropDatabase()".into()));
    }
    if compact.contains(".drop()") {
        out.push((Class::DbDrop, "collection.drop()".into()));
    }
    if compact.contains("deleteMany({})") || compact.contains("remove({})") {
        out.push((Class::DbDeleteAll, "deleteMany({})".into()));
    }
    out
}

/// Splits at `;` outside quotes, dropping `--` and `/* */` comments.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            // Quoted text is replaced by a placeholder so `'WHERE'` is not a clause.
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' | '`' => {
                quote = Some(c);
                current.push_str(" _ ");
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '#' if current.trim().is_empty() => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
                continue;
            }
            ';' => {
                out.push(std::mem::take(&mut current));
            }
            _ => current.push(c),
        }
        i += 1;
    }
    out.push(current);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(sql: &str) -> Vec<Class> {
        classify(sql).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn statement_classes() {
        assert_eq!(classes("drop table users"), vec![Class::DbDrop]);
        assert_eq!(
            classes("SELECT 1; TRUNCATE orders;"),
            vec![Class::DbTruncate]
        );
        assert_eq!(classes("DELETE FROM users"), vec![Class::DbDeleteAll]);
        assert_eq!(
            classes("delete from users where id = 1"),
            Vec::<Class>::new()
        );
        assert_eq!(
            classes("UPDATE users SET admin = true"),
            vec![Class::DbUpdateAll]
        );
        assert_eq!(classes("update t set a='WHERE'"), vec![Class::DbUpdateAll]);
        assert_eq!(classes("FLUSHALL"), vec![Class::DbFlush]);
        assert_eq!(classes("db.dropDatabase()"), vec![Class::DbDrop]);
        assert_eq!(
            classes("-- DROP TABLE x\nSELECT * FROM x"),
            Vec::<Class>::new()
        );
        assert_eq!(classes("/* drop table */ select 1"), Vec::<Class>::new());
        assert_eq!(classes("ALTER TABLE t DROP COLUMN c"), vec![Class::DbDrop]);
    }
}
