//! Renderers of a [`Report`]: the terminal view, Markdown (a CI job summary), JUnit XML and
//! a self-contained HTML page.
//! Each reads only the report.

use crate::diff::Difference;
use crate::report::Report;

/// The terminal view of a report.
pub fn terminal(r: &Report, full: usize, colour: bool) -> String {
    let paint = |code: &str, s: &str| if colour { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
    let mut o = String::new();
    o.push_str(&format!(
        "{} {} ({}) vs {} ({}) on {}{}\n",
        paint("1", "replay diff:"),
        r.a.name,
        r.a.kind,
        r.b.name,
        r.b.kind,
        r.corpus,
        if r.selection.is_empty() { String::new() } else { format!(" [{}]", r.selection.join(" ")) }
    ));
    o.push_str(&format!(
        "{} cases: {} same, {} different, {} inconclusive\n",
        r.cases,
        paint("32", &r.same.to_string()),
        paint(if r.different > 0 { "31" } else { "32" }, &r.different.to_string()),
        r.inconclusive
    ));
    if !r.noise.is_empty() {
        o.push_str(&format!(
            "  noise: {} differing cases were only noise; paths that differ between two runs of one side:\n",
            r.noise_only
        ));
        for n in r.noise.iter().take(10) {
            o.push_str(&format!("    {:>8} cases  side {}  {}\n", n.cases, n.side, n.signature));
        }
    }
    for (why, n) in &r.inconclusive_reasons {
        o.push_str(&format!("  inconclusive: {n} x {why}\n"));
    }
    if !r.clusters.is_empty() {
        o.push_str(&format!(
            "\n{} cluster{}:\n",
            r.clusters.len(),
            if r.clusters.len() == 1 { "" } else { "s" }
        ));
        o.push_str("   #    cases   share  differences\n");
        for (i, c) in r.clusters.iter().enumerate() {
            for (j, s) in c.signature.iter().enumerate() {
                if j == 0 {
                    o.push_str(&format!("{:>4} {:>8} {:>6.1}%  {s}\n", i + 1, c.count, c.share * 100.0));
                } else {
                    o.push_str(&format!("{:>4} {:>8} {:>7}  {s}\n", "", "", ""));
                }
            }
        }
    }
    for (i, c) in r.clusters.iter().enumerate().take(full) {
        o.push_str(&format!(
            "\n{} {} cases ({:.1}%)\n",
            paint("1", &format!("cluster {}:", i + 1)),
            c.count,
            c.share * 100.0
        ));
        let ex: Vec<String> =
            c.examples.iter().map(|e| format!("{} ({}, {} B)", e.case, e.kind, e.size)).collect();
        o.push_str(&format!("  smallest examples: {}\n", ex.join(", ")));
        o.push_str(&format!("  case {}:\n", c.examples[0].case));
        o.push_str(&side_by_side(&c.representative, &r.a.name, &r.b.name, &paint));
        for cmd in &c.reproduce {
            o.push_str(&format!("  reproduce: {cmd}\n"));
        }
        if let Some(curl) = &c.curl {
            o.push_str(&format!("  request:   {curl}\n"));
        }
    }
    if r.clusters.len() > full {
        o.push_str(&format!(
            "\n({} more clusters in the table above; --examples N shows more)\n",
            r.clusters.len() - full
        ));
    }
    for e in &r.verbose {
        o.push_str(&format!("\ncase {} ({:?})", e.case, e.diff.verdict).to_lowercase());
        if let Some(why) = &e.diff.reason {
            o.push_str(&format!(": {why}"));
        }
        o.push('\n');
        o.push_str(&side_by_side(&e.diff.differences, &r.a.name, &r.b.name, &paint));
    }
    for u in &r.unused_rules {
        o.push_str(&format!(
            "{} {} rule {} ({}) changed nothing in this run\n",
            paint("33", "warning:"),
            u.kind,
            u.selector,
            u.origin
        ));
    }
    for p in &r.problems {
        o.push_str(&format!("{} {p}\n", paint("33", "warning:")));
    }
    o
}

fn side_by_side(diffs: &[Difference], a: &str, b: &str, paint: &dyn Fn(&str, &str) -> String) -> String {
    const SHOWN: usize = 20;
    let w = diffs.iter().take(SHOWN).map(|d| d.path.chars().count()).max().unwrap_or(4).clamp(4, 48);
    let col = 42;
    let cut = |s: &str| {
        if s.chars().count() > col {
            format!("{}…", s.chars().take(col - 1).collect::<String>())
        } else {
            s.to_string()
        }
    };
    let mut o = format!(
        "    {:w$}  {:15}  {:col$}  {}\n",
        "path",
        "kind",
        cut(&format!("A: {a}")),
        cut(&format!("B: {b}"))
    );
    for d in diffs.iter().take(SHOWN) {
        let (x, y) = (d.a.clone().unwrap_or_else(|| "-".into()), d.b.clone().unwrap_or_else(|| "-".into()));
        o.push_str(&format!(
            "    {:w$}  {:15}  {}  {}\n",
            d.path,
            d.kind.name(),
            paint("31", &format!("{:col$}", cut(&x))),
            paint("32", &cut(&y))
        ));
        if let Some(detail) = &d.detail {
            o.push_str(&format!("    {:w$}  {detail}\n", ""));
        }
    }
    if diffs.len() > SHOWN {
        o.push_str(&format!("    ... and {} more differences\n", diffs.len() - SHOWN));
    }
    o
}

/// The report as Markdown: a summary, the cluster table, and each of the first `full`
/// clusters with its example in a collapsible block.
pub fn markdown(r: &Report, full: usize) -> String {
    let mut o = format!("## replay diff: `{}` vs `{}`\n\n", r.a.name, r.b.name);
    o.push_str(&format!(
        "{} cases from `{}`{}: **{} same, {} different, {} inconclusive**.\n\n",
        r.cases,
        r.corpus,
        if r.selection.is_empty() { String::new() } else { format!(" ({})", r.selection.join(" ")) },
        r.same,
        r.different,
        r.inconclusive
    ));
    if !r.clusters.is_empty() {
        o.push_str("| # | cases | share | differences |\n|---:|---:|---:|---|\n");
        for (i, c) in r.clusters.iter().enumerate() {
            let sig: Vec<String> = c.signature.iter().map(|s| format!("`{}`", md_escape(s))).collect();
            o.push_str(&format!(
                "| {} | {} | {:.1}% | {} |\n",
                i + 1,
                c.count,
                c.share * 100.0,
                sig.join("<br>")
            ));
        }
    }
    for (i, c) in r.clusters.iter().enumerate().take(full) {
        o.push_str(&format!(
            "\n<details><summary>Cluster {}: {} cases, example <code>{}</code></summary>\n\n",
            i + 1,
            c.count,
            c.examples[0].case
        ));
        o.push_str(&format!(
            "| path | kind | {} | {} |\n|---|---|---|---|\n",
            md_escape(&r.a.name),
            md_escape(&r.b.name)
        ));
        for d in c.representative.iter().take(20) {
            o.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                md_escape(&d.path),
                d.kind.name(),
                md_code(d.a.as_deref().unwrap_or("-")),
                md_code(d.b.as_deref().unwrap_or("-"))
            ));
        }
        o.push_str("\nReproduce:\n\n```sh\n");
        for cmd in &c.reproduce {
            o.push_str(cmd);
            o.push('\n');
        }
        if let Some(curl) = &c.curl {
            o.push_str(curl);
            o.push('\n');
        }
        o.push_str("```\n\n</details>\n");
    }
    for u in &r.unused_rules {
        o.push_str(&format!(
            "\n> **Unused rule:** {} `{}` ({}) changed nothing in this run.\n",
            u.kind,
            md_escape(&u.selector),
            md_escape(&u.origin)
        ));
    }
    o
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_code(s: &str) -> String {
    format!("<code>{}</code>", xml_escape(s).replace('|', "&#124;").replace('\n', " "))
}

/// The report as JUnit XML: one test case per cluster (each a failure), or one passing case
/// when the sides agree. Inconclusive cases are one skipped test case.
pub fn junit(r: &Report) -> String {
    let suite = format!("replay diff {} vs {}", r.a.name, r.b.name);
    let mut cases = String::new();
    let mut tests = 0;
    for (i, c) in r.clusters.iter().enumerate() {
        tests += 1;
        let name = format!("cluster {}: {}", i + 1, c.signature.join("; "));
        let mut body = format!(
            "{} of {} cases ({:.1}%). Example {}:\n",
            c.count,
            r.cases,
            c.share * 100.0,
            c.examples[0].case
        );
        for d in &c.representative {
            body.push_str(&format!(
                "  {} {}: {} -> {}\n",
                d.kind.name(),
                d.path,
                d.a.as_deref().unwrap_or("-"),
                d.b.as_deref().unwrap_or("-")
            ));
        }
        for cmd in &c.reproduce {
            body.push_str(&format!("  reproduce: {cmd}\n"));
        }
        cases.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\">\n      <failure message=\"{}\" type=\"difference\">{}</failure>\n    </testcase>\n",
            xml_escape(&suite),
            xml_escape(&name),
            xml_escape(&format!("{} cases differ: {}", c.count, c.signature.join("; "))),
            xml_escape(&body)
        ));
    }
    let skipped = if r.inconclusive > 0 { 1 } else { 0 };
    if skipped == 1 {
        tests += 1;
        cases.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"inconclusive cases\">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
            xml_escape(&suite),
            xml_escape(&format!("{} cases inconclusive (a side failed non-deterministically)", r.inconclusive))
        ));
    }
    if r.clusters.is_empty() {
        tests += 1;
        cases.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\"/>\n",
            xml_escape(&suite),
            xml_escape(&format!("{} cases agree", r.same))
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"replay\" tests=\"{tests}\" failures=\"{}\" errors=\"0\" skipped=\"{skipped}\">\n  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{}\" errors=\"0\" skipped=\"{skipped}\">\n{cases}  </testsuite>\n</testsuites>\n",
        r.clusters.len(),
        xml_escape(&suite),
        r.clusters.len(),
    )
}

/// Escapes text for XML and HTML, dropping characters XML 1.0 cannot hold.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// The report as one self-contained HTML page (no network, no external assets): the summary,
/// the cluster table, and each cluster as an expandable block with its side-by-side example.
/// `page.html#cluster-N` opens cluster N.
pub fn html(r: &Report) -> String {
    let e = xml_escape;
    let mut o = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    o.push_str(&format!("<title>replay diff: {} vs {}</title>\n", e(&r.a.name), e(&r.b.name)));
    o.push_str(
        "<style>\n\
         body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}\n\
         table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\n\
         th{background:#f3f3f3}code,pre{font:12px/1.4 ui-monospace,monospace}td.a{background:#fff0f0}td.b{background:#f0fff0}\n\
         details{border:1px solid #ddd;border-radius:4px;margin:.6em 0;padding:.3em .8em}summary{cursor:pointer;font-weight:600}\n\
         .num{text-align:right}.warn{color:#a60}\n\
         </style></head><body>\n",
    );
    o.push_str(&format!(
        "<h1>replay diff: <code>{}</code> vs <code>{}</code></h1>\n<p id=\"summary\">{} cases from <code>{}</code>{}: \
         <b><span id=\"same\">{}</span> same, <span id=\"different\">{}</span> different, \
         <span id=\"inconclusive\">{}</span> inconclusive</b>.</p>\n",
        e(&r.a.name),
        e(&r.b.name),
        r.cases,
        e(&r.corpus),
        if r.selection.is_empty() { String::new() } else { format!(" ({})", e(&r.selection.join(" "))) },
        r.same,
        r.different,
        r.inconclusive
    ));
    if !r.clusters.is_empty() {
        o.push_str(
            "<table id=\"clusters\"><tr><th>#</th><th>cases</th><th>share</th><th>differences</th></tr>\n",
        );
        for (i, c) in r.clusters.iter().enumerate() {
            let sig: Vec<String> = c.signature.iter().map(|s| format!("<code>{}</code>", e(s))).collect();
            o.push_str(&format!(
                "<tr><td><a href=\"#cluster-{n}\">{n}</a></td><td class=\"num count\">{}</td><td class=\"num\">{:.1}%</td><td>{}</td></tr>\n",
                c.count,
                c.share * 100.0,
                sig.join("<br>"),
                n = i + 1
            ));
        }
        o.push_str("</table>\n");
    }
    for (i, c) in r.clusters.iter().enumerate() {
        o.push_str(&format!(
            "<details id=\"cluster-{}\"><summary>Cluster {}: {} cases ({:.1}%): {}</summary>\n",
            i + 1,
            i + 1,
            c.count,
            c.share * 100.0,
            e(&c.signature.join("; "))
        ));
        let ex: Vec<String> = c
            .examples
            .iter()
            .map(|x| format!("<code>{}</code> ({}, {} B)", x.case, e(&x.kind), x.size))
            .collect();
        o.push_str(&format!("<p>Smallest examples: {}</p>\n", ex.join(", ")));
        o.push_str(&format!(
            "<table class=\"example\"><tr><th>path</th><th>kind</th><th>{}</th><th>{}</th></tr>\n",
            e(&r.a.name),
            e(&r.b.name)
        ));
        for d in &c.representative {
            o.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"a\"><code>{}</code></td><td class=\"b\"><code>{}</code></td></tr>\n",
                e(&d.path),
                d.kind.name(),
                e(d.a.as_deref().unwrap_or("-")),
                e(d.b.as_deref().unwrap_or("-"))
            ));
            if let Some(detail) = &d.detail {
                o.push_str(&format!("<tr><td></td><td colspan=\"3\">{}</td></tr>\n", e(detail)));
            }
        }
        o.push_str("</table>\n<pre>");
        for cmd in &c.reproduce {
            o.push_str(&e(cmd));
            o.push('\n');
        }
        if let Some(curl) = &c.curl {
            o.push_str(&e(curl));
            o.push('\n');
        }
        o.push_str("</pre></details>\n");
    }
    for u in &r.unused_rules {
        o.push_str(&format!(
            "<p class=\"warn\">Unused rule: {} <code>{}</code> ({}) changed nothing in this run.</p>\n",
            e(&u.kind),
            e(&u.selector),
            e(&u.origin)
        ));
    }
    // Opens the cluster named in the address (#cluster-N), so a link can point at one.
    o.push_str(
        "<script>\nfunction openHash(){var d=location.hash&&document.getElementById(location.hash.slice(1));\
         if(d&&d.tagName==='DETAILS'){d.open=true;}}\nwindow.addEventListener('hashchange',openHash);openHash();\n</script>\n",
    );
    o.push_str("</body></html>\n");
    o
}
