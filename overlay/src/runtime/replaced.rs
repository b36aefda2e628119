//! Labelled gauges whose label sets are replaced as a whole, served beside the recorder's.
//!
//! The `metrics` recorder keeps every label set it ever saw, for the life of the process: a gauge
//! labelled by node would grow by one series for every node that ever entered a consensus and
//! left, the identities an attacker churns through included, and `/metrics` with it. The
//! families here hold only the label values of their latest [`ReplacedGauges::replace`], so
//! what the endpoint serves is bounded by what the caller holds now.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Arc, Mutex, PoisonError},
};

/// One family: its help text, its label's name and the latest values, one a label value.
#[derive(Debug, Clone)]
struct Family {
    help: &'static str,
    label: &'static str,
    values: BTreeMap<String, f64>,
}

/// The families a process serves this way; cheap to clone (one shared cell).
#[derive(Debug, Clone, Default)]
pub struct ReplacedGauges(Arc<Mutex<BTreeMap<&'static str, Family>>>);

impl ReplacedGauges {
    /// Makes `values` (label value, gauge value) the whole of gauge `name`: label values not in
    /// it are gone from the next render, and of a label value given twice the last counts (one
    /// series a label value, as the text format wants). `name` must not also be a recorder
    /// metric.
    pub fn replace(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: Vec<(String, f64)>,
    ) {
        let mut families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        families.insert(
            name,
            Family {
                help,
                label,
                values: values.into_iter().collect(),
            },
        );
    }

    /// Label values gauge `name` holds now.
    pub fn len(&self, name: &str) -> usize {
        let families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        families.get(name).map_or(0, |f| f.values.len())
    }

    /// The families in Prometheus's text format (0.0.4), to append to the recorder's render.
    pub fn render(&self) -> String {
        let families = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, family) in families.iter().filter(|(_, f)| !f.values.is_empty()) {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {}", escape_help(family.help));
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (value_label, value) in &family.values {
                let _ = writeln!(
                    out,
                    "{name}{{{}=\"{}\"}} {value}",
                    family.label,
                    escape(value_label)
                );
            }
            out.push('\n');
        }
        out
    }
}

/// Help text as the text format wants it: backslash and newline escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replace_drops_the_label_values_it_does_not_name() {
        let gauges = ReplacedGauges::default();
        for round in 0..1000 {
            // Every round three fresh nodes, as identities churned each epoch would be.
            let values = (0..3).map(|i| (format!("node{round}-{i}"), 1.0)).collect();
            gauges.replace("p2pmix_test_gauge", "A test.", "node", values);
        }
        assert_eq!(gauges.len("p2pmix_test_gauge"), 3);
        let text = gauges.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("p2pmix_test_gauge{"))
                .count(),
            3,
            "{text}"
        );
        assert!(
            text.contains("p2pmix_test_gauge{node=\"node999-2\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("node998"), "{text}");
    }

    #[test]
    fn a_label_value_given_twice_is_one_series() {
        let gauges = ReplacedGauges::default();
        let twice = vec![("a".into(), 1.0), ("b".into(), 2.0), ("a".into(), 3.0)];
        gauges.replace("p2pmix_x", "X.", "node", twice);
        assert_eq!(gauges.len("p2pmix_x"), 2);
        assert_eq!(
            gauges.render(),
            "# HELP p2pmix_x X.\n# TYPE p2pmix_x gauge\np2pmix_x{node=\"a\"} 3\np2pmix_x{node=\"b\"} 2\n\n"
        );
    }

    #[test]
    fn label_values_are_escaped_and_empty_families_not_rendered() {
        let gauges = ReplacedGauges::default();
        gauges.replace(
            "p2pmix_a",
            "A.\nB\\",
            "node",
            vec![("x\"}\n\\".into(), 2.5)],
        );
        gauges.replace("p2pmix_b", "B.", "node", Vec::new());
        assert_eq!(
            gauges.render(),
            "# HELP p2pmix_a A.\\nB\\\\\n# TYPE p2pmix_a gauge\np2pmix_a{node=\"x\\\"}\\n\\\\\"} 2.5\n\n"
        );
        gauges.replace("p2pmix_a", "A.", "node", Vec::new());
        assert_eq!(gauges.len("p2pmix_a"), 0);
        assert_eq!(gauges.render(), "");
    }
}
