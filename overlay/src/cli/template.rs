//! Commented TOML: the configuration files that `init`, `--print-config` and `testnet genconfig`
//! write. Every key gets its meaning as a comment above it; a key without a value is written
//! commented out with an example, so that the file still says everything it could.

use std::{fmt::Write, path::Path};

use toml::Value;

/// Longest comment line.
const WIDTH: usize = 98;

/// A TOML document under construction.
#[derive(Debug, Default)]
pub(crate) struct Toml(String);

impl Toml {
    /// A document opening with the comment `header`.
    pub(crate) fn new(header: &str) -> Self {
        let mut t = Toml(String::new());
        t.comment(header);
        t
    }

    /// `text` as comment lines (wrapped; blank lines kept as paragraph breaks).
    pub(crate) fn comment(&mut self, text: &str) {
        for paragraph in text.split('\n') {
            let mut line = String::from("#");
            for word in paragraph.split_whitespace() {
                if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
                    self.0.push_str(&line);
                    self.0.push('\n');
                    line = String::from("#");
                }
                line.push(' ');
                line.push_str(word);
            }
            self.0.push_str(&line);
            self.0.push('\n');
        }
    }

    /// A blank line, then `[name]`.
    pub(crate) fn section(&mut self, name: &str) {
        let _ = write!(self.0, "\n[{name}]\n");
    }

    /// `key = value` below the comment `doc`, or `# key = example` when there is no value.
    pub(crate) fn entry(&mut self, key: &str, doc: &str, value: Option<Value>, example: Value) {
        self.0.push('\n');
        self.comment(doc);
        match value {
            Some(v) => {
                let _ = writeln!(self.0, "{key} = {v}");
            }
            None => {
                let _ = writeln!(self.0, "# {key} = {example}");
            }
        }
    }

    /// The document.
    pub(crate) fn finish(self) -> String {
        self.0
    }
}

/// A path as a TOML string.
pub(crate) fn path(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// A list of displayable values as a TOML array of strings.
pub(crate) fn strings<T: ToString>(items: &[T]) -> Value {
    Value::Array(items.iter().map(|i| Value::String(i.to_string())).collect())
}

/// A string.
pub(crate) fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// An integer (TOML integers are signed 64-bit: larger values are written as the largest).
pub(crate) fn integer(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_back_and_missing_values_are_commented_out() {
        let mut t = Toml::new(
            "a header that is long enough to be wrapped onto a second line when it goes on and on and on",
        );
        t.entry("a", "the a", Some(string("x \"quoted\"")), string("e"));
        t.entry("b", "the b", None, integer(3));
        t.entry(
            "c",
            "the c",
            Some(strings(&["/ip4/1.2.3.4/tcp/1"])),
            strings::<&str>(&[]),
        );
        t.section("s");
        t.entry("d", "the d", Some(integer(u64::MAX)), integer(0));
        let text = t.finish();
        assert!(text.lines().all(|l| l.len() <= WIDTH), "{text}");
        assert!(text.contains("\n# b = 3\n"), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("x \"quoted\""));
        assert!(!parsed.contains_key("b"));
        assert_eq!(parsed["c"].as_array().map(Vec::len), Some(1));
        assert_eq!(parsed["s"]["d"].as_integer(), Some(i64::MAX));
    }
}
