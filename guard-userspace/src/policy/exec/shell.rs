//! A shell-words parser for `sh -c` strings: splits a script into simple
//! commands at `;`, `&&`, `||`, `|`, `&`, newlines and subshell parentheses,
//! honours quoting, and lifts `$(...)`, backquotes and `<(...)` out as commands
//! of their own. It does not expand anything: `$HOME` stays `$HOME`, so callers
//! treat such words as unknown.
//!
//! Hand-written because shell-words/shlex split one command line only; they do
//! not know operators, substitutions or here-documents.

/// Nesting bound for substitutions and `sh -c` inside `sh -c`.
pub const MAX_DEPTH: usize = 8;
/// Scripts longer than this are not parsed (the caller treats them as opaque).
pub const MAX_SCRIPT: usize = 256 * 1024;

/// One simple command of a script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleCommand {
    /// Words after quote removal, assignments (`FOO=1`) included.
    pub words: Vec<String>,
    /// Where standard input comes from.
    pub stdin: Stdin,
    /// Files written by `>` or `>>` redirections (`>` truncates them).
    pub truncated_files: Vec<String>,
}

/// Standard input of a simple command, as far as the script shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stdin {
    /// Inherited from the caller: unknown.
    #[default]
    Inherited,
    /// The output of the previous command in a pipeline.
    Pipe,
    /// A here-document or here-string: the text itself.
    Text(String),
    /// `< FILE`.
    File(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellError {
    TooLong,
    TooDeep,
    Unterminated(&'static str),
}

impl std::fmt::Display for ShellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShellError::TooLong => write!(f, "shell string longer than {MAX_SCRIPT} bytes"),
            ShellError::TooDeep => write!(f, "shell substitutions nested deeper than {MAX_DEPTH}"),
            ShellError::Unterminated(what) => write!(f, "unterminated {what}"),
        }
    }
}

/// Splits `script` into simple commands, substitutions included (their
/// commands come first, as the shell runs them first).
pub fn parse(script: &str) -> Result<Vec<SimpleCommand>, ShellError> {
    parse_depth(script, 0, true)
}

/// Splits `script` into simple commands without lifting substitutions out
/// (`echo $(x)` stays one command): for command lines given as text.
pub fn split(script: &str) -> Result<Vec<SimpleCommand>, ShellError> {
    parse_depth(script, 0, false)
}

fn parse_depth(script: &str, depth: usize, lift: bool) -> Result<Vec<SimpleCommand>, ShellError> {
    if script.len() > MAX_SCRIPT {
        return Err(ShellError::TooLong);
    }
    if depth > MAX_DEPTH {
        return Err(ShellError::TooDeep);
    }
    let mut lexer = Lexer {
        chars: script.chars().collect(),
        pos: 0,
        depth,
        lift,
        out: Vec::new(),
        current: SimpleCommand::default(),
        pending_heredocs: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.out)
}

enum Redirect {
    In,
    Out,
    HereString,
    HereDoc {
        strip_tabs: bool,
    },
    /// `2>&1`, `>&2`: duplicates a descriptor, names no file.
    Dup,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    /// Whether substitutions become commands of their own.
    lift: bool,
    out: Vec<SimpleCommand>,
    current: SimpleCommand,
    /// Here-document delimiters waiting for the end of the line, and the index
    /// of the command (in `out` after it is finished) that reads them.
    pending_heredocs: Vec<(String, bool, usize)>,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn run(&mut self) -> Result<(), ShellError> {
        let mut pipe_next = false;
        loop {
            self.skip_blanks();
            let Some(c) = self.peek() else { break };
            match c {
                '#' if self.current.words.is_empty() || self.at_word_start() => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '\n' => {
                    self.pos += 1;
                    self.finish();
                    self.read_heredocs()?;
                }
                ';' | '(' | ')' => {
                    self.pos += 1;
                    // `;;` in case statements is just a separator here.
                    self.finish();
                }
                '&' if self.peek_at(1) == Some('>') => {
                    self.pos += 2;
                    if self.peek() == Some('>') {
                        self.pos += 1;
                    }
                    self.redirect(Redirect::Out)?;
                }
                '&' => {
                    self.pos += 1;
                    if self.peek() == Some('&') {
                        self.pos += 1;
                    }
                    self.finish();
                }
                '|' => {
                    self.pos += 1;
                    if self.peek() == Some('|') {
                        self.pos += 1;
                        self.finish();
                    } else {
                        if self.peek() == Some('&') {
                            self.pos += 1;
                        }
                        self.finish();
                        pipe_next = true;
                        continue;
                    }
                }
                '<' if self.peek_at(1) == Some('(') => {
                    self.pos += 2;
                    let inner = self.balanced(')')?;
                    self.nested(&inner)?;
                    self.current.words.push(format!("<({inner})"));
                }
                '>' if self.peek_at(1) == Some('(') => {
                    self.pos += 2;
                    let inner = self.balanced(')')?;
                    self.nested(&inner)?;
                    self.current.words.push(format!(">({inner})"));
                }
                '<' => {
                    self.pos += 1;
                    if self.peek() == Some('<') {
                        self.pos += 1;
                        if self.peek() == Some('<') {
                            self.pos += 1;
                            self.redirect(Redirect::HereString)?;
                        } else {
                            let strip_tabs = self.peek() == Some('-');
                            if strip_tabs {
                                self.pos += 1;
                            }
                            self.redirect(Redirect::HereDoc { strip_tabs })?;
                        }
                    } else if self.peek() == Some('&') {
                        self.pos += 1;
                        self.redirect(Redirect::Dup)?;
                    } else {
                        if self.peek() == Some('>') {
                            self.pos += 1;
                        }
                        self.redirect(Redirect::In)?;
                    }
                }
                '>' => {
                    self.pos += 1;
                    if matches!(self.peek(), Some('>') | Some('|')) {
                        self.pos += 1;
                    }
                    if self.peek() == Some('&') {
                        self.pos += 1;
                        self.redirect(Redirect::Dup)?;
                    } else {
                        self.redirect(Redirect::Out)?;
                    }
                }
                _ => {
                    let word = self.word()?;
                    // `2>file`: a word of digits directly followed by a redirection.
                    if word.chars().all(|c| c.is_ascii_digit())
                        && matches!(self.peek(), Some('>') | Some('<'))
                    {
                        continue;
                    }
                    self.current.words.push(word);
                }
            }
            if pipe_next && !self.current.words.is_empty() {
                if self.current.stdin == Stdin::Inherited {
                    self.current.stdin = Stdin::Pipe;
                }
                pipe_next = false;
            }
        }
        // A here-document left without its body (no newline after it) reads
        // nothing: the command keeps an empty input.
        self.finish();
        Ok(())
    }

    fn at_word_start(&self) -> bool {
        self.pos == 0 || self.chars[self.pos - 1].is_whitespace()
    }

    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || c == '\r' {
                self.pos += 1;
            } else if c == '\\' && self.peek_at(1) == Some('\n') {
                self.pos += 2;
            } else {
                break;
            }
        }
    }

    fn finish(&mut self) {
        let mut command = std::mem::take(&mut self.current);
        strip_reserved_words(&mut command.words);
        if !command.words.is_empty() || command.stdin != Stdin::Inherited {
            self.out.push(command);
        }
    }

    fn redirect(&mut self, kind: Redirect) -> Result<(), ShellError> {
        self.skip_blanks();
        if self.peek().is_none_or(|c| "\n;|&()<>".contains(c)) {
            return Ok(());
        }
        let target = self.word()?;
        match kind {
            Redirect::In => self.current.stdin = Stdin::File(target),
            Redirect::Out => self.current.truncated_files.push(target),
            Redirect::HereString => self.current.stdin = Stdin::Text(target),
            Redirect::HereDoc { strip_tabs } => {
                // The body follows the end of the current line; remember where it goes.
                let index = self.out.len();
                self.pending_heredocs.push((target, strip_tabs, index));
                self.current.stdin = Stdin::Text(String::new());
            }
            Redirect::Dup => {}
        }
        Ok(())
    }

    /// Reads here-document bodies after a newline, in the order they were opened.
    fn read_heredocs(&mut self) -> Result<(), ShellError> {
        for (delim, strip_tabs, index) in std::mem::take(&mut self.pending_heredocs) {
            let mut body = String::new();
            loop {
                if self.pos >= self.chars.len() {
                    break;
                }
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
                let line: String = self.chars[start..self.pos].iter().collect();
                if self.peek() == Some('\n') {
                    self.pos += 1;
                }
                let line = if strip_tabs {
                    line.trim_start_matches('\t').to_string()
                } else {
                    line
                };
                if line == delim {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if let Some(command) = self.out.get_mut(index) {
                command.stdin = Stdin::Text(body);
            }
        }
        Ok(())
    }

    /// One word, quotes removed; substitutions inside it are parsed as commands.
    fn word(&mut self) -> Result<String, ShellError> {
        let mut word = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => break,
                '\\' => {
                    self.pos += 1;
                    match self.peek() {
                        Some('\n') => self.pos += 1,
                        Some(c) => {
                            word.push(c);
                            self.pos += 1;
                        }
                        None => {}
                    }
                }
                '\'' => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => return Err(ShellError::Unterminated("single quote")),
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some(c) => {
                                word.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    self.double_quoted(&mut word)?;
                }
                '`' => {
                    self.pos += 1;
                    let inner = self.until_backquote()?;
                    self.nested(&inner)?;
                    word.push_str(&format!("$({inner})"));
                }
                '$' if self.peek_at(1) == Some('(') && self.peek_at(2) == Some('(') => {
                    // Arithmetic: no commands inside worth classifying.
                    self.pos += 3;
                    let inner = self.balanced(')')?;
                    word.push_str(&format!("$(({inner})"));
                }
                '$' if self.peek_at(1) == Some('(') => {
                    self.pos += 2;
                    let inner = self.balanced(')')?;
                    self.nested(&inner)?;
                    word.push_str(&format!("$({inner})"));
                }
                '$' if self.peek_at(1) == Some('\'') => {
                    // ANSI-C quoting: decode the common escapes.
                    self.pos += 2;
                    loop {
                        match self.peek() {
                            None => return Err(ShellError::Unterminated("$'...' quote")),
                            Some('\'') => {
                                self.pos += 1;
                                break;
                            }
                            Some('\\') => {
                                self.pos += 1;
                                let escaped = self.peek().unwrap_or('\\');
                                self.pos += 1;
                                word.push(match escaped {
                                    'n' => '\n',
                                    't' => '\t',
                                    other => other,
                                });
                            }
                            Some(c) => {
                                word.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                }
                _ => {
                    word.push(c);
                    self.pos += 1;
                }
            }
        }
        Ok(word)
    }

    fn double_quoted(&mut self, word: &mut String) -> Result<(), ShellError> {
        loop {
            match self.peek() {
                None => return Err(ShellError::Unterminated("double quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => {
                            word.push(c);
                            self.pos += 1;
                        }
                        Some('\n') => self.pos += 1,
                        _ => word.push('\\'),
                    }
                }
                Some('`') => {
                    self.pos += 1;
                    let inner = self.until_backquote()?;
                    self.nested(&inner)?;
                    word.push_str(&format!("$({inner})"));
                }
                Some('$') if self.peek_at(1) == Some('(') && self.peek_at(2) != Some('(') => {
                    self.pos += 2;
                    let inner = self.balanced(')')?;
                    self.nested(&inner)?;
                    word.push_str(&format!("$({inner})"));
                }
                Some(c) => {
                    word.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn until_backquote(&mut self) -> Result<String, ShellError> {
        let mut inner = String::new();
        loop {
            match self.peek() {
                None => return Err(ShellError::Unterminated("backquote")),
                Some('`') => {
                    self.pos += 1;
                    return Ok(inner);
                }
                Some('\\') if self.peek_at(1) == Some('`') => {
                    inner.push('`');
                    self.pos += 2;
                }
                Some(c) => {
                    inner.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// Text up to the matching `close`, counting nested parentheses and quotes.
    fn balanced(&mut self, close: char) -> Result<String, ShellError> {
        let mut inner = String::new();
        let mut level = 0usize;
        let mut quote: Option<char> = None;
        loop {
            let Some(c) = self.peek() else {
                return Err(ShellError::Unterminated("$( substitution"));
            };
            self.pos += 1;
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some('"'), '\\') => {
                    inner.push(c);
                    if let Some(n) = self.peek() {
                        inner.push(n);
                        self.pos += 1;
                    }
                    continue;
                }
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '\\') => {
                    inner.push(c);
                    if let Some(n) = self.peek() {
                        inner.push(n);
                        self.pos += 1;
                    }
                    continue;
                }
                (None, '(') => level += 1,
                (None, c) if c == close => {
                    if level == 0 {
                        return Ok(inner);
                    }
                    level -= 1;
                }
                _ => {}
            }
            inner.push(c);
        }
    }

    fn nested(&mut self, inner: &str) -> Result<(), ShellError> {
        if !self.lift {
            return Ok(());
        }
        let commands = parse_depth(inner, self.depth + 1, true)?;
        self.out.extend(commands);
        Ok(())
    }
}

/// Drops the shell's reserved words that may start a command (`if rm -rf x; then`).
fn strip_reserved_words(words: &mut Vec<String>) {
    const LEADING: &[&str] = &[
        "if", "then", "else", "elif", "do", "while", "until", "!", "{", "}", "fi", "done", "esac",
    ];
    let skip = words
        .iter()
        .take_while(|w| LEADING.contains(&w.as_str()))
        .count();
    words.drain(..skip);
    // `case x in` and function headers declare, they do not run anything.
    // (`for x in a b` is kept: readers bind x to a and b.)
    if words
        .first()
        .is_some_and(|w| w == "case" || w == "select" || w == "function")
    {
        words.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(script: &str) -> Vec<Vec<String>> {
        parse(script)
            .unwrap_or_else(|e| panic!("parsing {script:?}: {e}"))
            .into_iter()
            .map(|c| c.words)
            .collect()
    }

    #[test]
    fn splits_on_operators_and_keeps_quotes_together() {
        assert_eq!(
            words("cd /x && rm -rf 'a b' ; echo \"hi there\" | tee f || true & sleep 1"),
            vec![
                vec!["cd", "/x"],
                vec!["rm", "-rf", "a b"],
                vec!["echo", "hi there"],
                vec!["tee", "f"],
                vec!["true"],
                vec!["sleep", "1"],
            ]
        );
    }

    #[test]
    fn substitutions_become_commands() {
        let parsed = words("echo $(rm -rf /) `shred x` \"$(dropdb prod)\"");
        assert!(parsed.contains(&vec!["rm".to_string(), "-rf".into(), "/".into()]));
        assert!(parsed.contains(&vec!["shred".to_string(), "x".into()]));
        assert!(parsed.contains(&vec!["dropdb".to_string(), "prod".into()]));
    }

    #[test]
    fn here_documents_and_strings_feed_stdin() {
        let parsed = parse("psql prod <<EOF\nDROP TABLE users;\nEOF\necho done").unwrap();
        assert_eq!(parsed[0].words, vec!["psql", "prod"]);
        assert_eq!(parsed[0].stdin, Stdin::Text("DROP TABLE users;\n".into()));
        assert_eq!(parsed[1].words, vec!["echo", "done"]);
        let parsed = parse("mysql <<< 'DROP DATABASE x'").unwrap();
        assert_eq!(parsed[0].stdin, Stdin::Text("DROP DATABASE x".into()));
        let parsed = parse("base64 -d x | sh").unwrap();
        assert_eq!(parsed[1].stdin, Stdin::Pipe);
        let parsed = parse(": > important.db 2>&1").unwrap();
        assert_eq!(parsed[0].truncated_files, vec!["important.db"]);
    }

    #[test]
    fn reserved_words_and_comments_are_skipped() {
        assert_eq!(
            words("if true; then rm -rf x; fi # rm -rf /"),
            vec![vec!["true"], vec!["rm", "-rf", "x"]]
        );
        assert_eq!(
            words("for f in a b; do rm $f; done"),
            vec![vec!["for", "f", "in", "a", "b"], vec!["rm", "$f"]]
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse("echo 'open"),
            Err(ShellError::Unterminated(_))
        ));
        assert!(matches!(
            parse("echo $(ls"),
            Err(ShellError::Unterminated(_))
        ));
        let deep = "$(".repeat(20) + &")".repeat(20);
        assert!(parse(&deep).is_err());
    }
}
