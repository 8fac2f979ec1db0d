//! A getopt-style argv parser that every tool classifier shares: combined
//! short flags (`-rf`), attached values (`-n5`, `--depth=1`), `--`, and options
//! after operands (GNU permutation) unless the tool stops at its first operand.

/// Which options of a tool take a value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spec {
    /// Short option letters that take a value (`"nCe"`).
    pub short_values: &'static str,
    /// Long options (without `--`) that take a value.
    pub long_values: &'static [&'static str],
    /// Stop at the first operand (wrappers, git before its subcommand).
    pub stop_at_operand: bool,
}

/// One option occurrence: `-r` is `short 'r'`, `--force` is `long "force"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub long: bool,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub opts: Vec<Opt>,
    pub operands: Vec<String>,
    /// Index in the input where parsing stopped (for `stop_at_operand`).
    pub rest_at: usize,
}

impl Parsed {
    /// True if the short letter or any of the long names was given.
    pub fn has(&self, short: Option<char>, longs: &[&str]) -> bool {
        self.opts.iter().any(|o| {
            if o.long {
                longs.contains(&o.name.as_str())
            } else {
                short.is_some_and(|s| o.name.len() == 1 && o.name.starts_with(s))
            }
        })
    }

    /// The last value of the short letter or long names.
    pub fn value(&self, short: Option<char>, longs: &[&str]) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|o| {
                if o.long {
                    longs.contains(&o.name.as_str())
                } else {
                    short.is_some_and(|s| o.name.len() == 1 && o.name.starts_with(s))
                }
            })
            .and_then(|o| o.value.as_deref())
    }
}

/// Parses `args` (the program name excluded) by `spec`.
pub fn parse(args: &[String], spec: &Spec) -> Parsed {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            if spec.stop_at_operand {
                parsed.rest_at = i + 1;
                return parsed;
            }
            parsed.operands.extend(args[i + 1..].iter().cloned());
            parsed.rest_at = args.len();
            return parsed;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            let value = if value.is_none() && spec.long_values.contains(&name.as_str()) {
                i += 1;
                args.get(i).cloned()
            } else {
                value
            };
            parsed.opts.push(Opt {
                name,
                long: true,
                value,
            });
        } else if arg.len() > 1 && arg.starts_with('-') {
            let letters: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < letters.len() {
                let letter = letters[j];
                if spec.short_values.contains(letter) {
                    let attached: String = letters[j + 1..].iter().collect();
                    let value = if attached.is_empty() {
                        i += 1;
                        args.get(i).cloned()
                    } else {
                        Some(attached)
                    };
                    parsed.opts.push(Opt {
                        name: letter.to_string(),
                        long: false,
                        value,
                    });
                    break;
                }
                parsed.opts.push(Opt {
                    name: letter.to_string(),
                    long: false,
                    value: None,
                });
                j += 1;
            }
        } else {
            if spec.stop_at_operand {
                parsed.rest_at = i;
                return parsed;
            }
            parsed.operands.push(arg.clone());
        }
        i += 1;
    }
    parsed.rest_at = args.len();
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn combined_short_flags_values_and_double_dash() {
        let spec = Spec {
            short_values: "n",
            long_values: &["depth"],
            stop_at_operand: false,
        };
        let p = parse(
            &s(&["-rfn5", "a", "--depth", "2", "--force=yes", "--", "-b"]),
            &spec,
        );
        assert!(p.has(Some('r'), &[]) && p.has(Some('f'), &[]));
        assert_eq!(p.value(Some('n'), &[]), Some("5"));
        assert_eq!(p.value(None, &["depth"]), Some("2"));
        assert_eq!(p.value(None, &["force"]), Some("yes"));
        assert_eq!(p.operands, s(&["a", "-b"]));
    }

    #[test]
    fn stops_at_first_operand_for_wrappers() {
        let spec = Spec {
            short_values: "u",
            stop_at_operand: true,
            ..Spec::default()
        };
        let args = s(&["-u", "root", "-E", "rm", "-rf", "/"]);
        let p = parse(&args, &spec);
        assert_eq!(p.value(Some('u'), &[]), Some("root"));
        assert_eq!(&args[p.rest_at..], &s(&["rm", "-rf", "/"])[..]);
    }
}
