//! The classic Prometheus text format 0.0.4 from OpenMetrics text, for scrapers and linters
//! (promtool) that do not read OpenMetrics.

/// OpenMetrics text as the classic Prometheus text format 0.0.4: a counter's HELP and TYPE
/// name its `_total` samples, and the `# EOF` and `# UNIT` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{tag}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples_and_drops_eof() {
        let om = "# HELP quorum_x Things done.\n# TYPE quorum_x counter\nquorum_x_total{a=\"b\"} 3\n# HELP quorum_g A gauge.\n# TYPE quorum_g gauge\nquorum_g 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP quorum_x_total Things done.\n# TYPE quorum_x_total counter\nquorum_x_total{a=\"b\"} 3\n# HELP quorum_g A gauge.\n# TYPE quorum_g gauge\nquorum_g 1\n"
        );
    }
}
