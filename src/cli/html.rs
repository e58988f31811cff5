//! Reports for the browser: one self-contained static HTML file a reviewer can
//! read, print and archive.
//!
//! Everything in it that came from a peer, a replica or a tracker is hostile:
//! it is escaped where it is written ([`escape`]), and the page also forbids
//! what escaping already prevents — a Content-Security-Policy of
//! `default-src 'none'` with inline style only, so no script runs and nothing
//! is fetched even if some text slipped through. No JavaScript is needed to
//! read it; the CSS is inline and prints.

use std::fmt::Write as _;

use similar::ChangeTag;

use crate::engine::release::{OutgoingIssue, Pending};
use crate::engine::review::word_runs;
use crate::engine::{FieldChange, PendingIssue, Review, Verdict};
use crate::model::FieldValue;
use crate::words::plural;

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 2px solid #888; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
section.issue { border: 1px solid #ccc; border-radius: 4px; padding: .2em 1em .8em; margin: 1em 0; break-inside: avoid; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { text-align: left; vertical-align: top; padding: .15em .6em; border-bottom: 1px solid #e4e4e4; }
th { font-weight: 600; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .5em; margin: .3em 0; }
del { background: #fdd; text-decoration: line-through; } ins { background: #dfd; text-decoration: none; }
.verdict { font-weight: 600; } .error, .warning { color: #a40000; }
code { font-size: .95em; }
@media print { body { margin: 0; max-width: none; } a { color: inherit; } }
";

/// `text` safe in HTML text and in a double- or single-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (a terminal's escapes among them) have no
            // business in a report: shown as their code.
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` and the already escaped `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The review of what the peers' fetched commits would change at `site`,
/// made at `when`.
pub fn review_page(site: &str, when: &str, reviews: &[Review]) -> String {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>Incoming review at {}</h1>\n<p>Made {} by <code>ferry review --html</code>: \
         what importing the fetched commits would change here. Nothing has been applied.</p>",
        escape(site),
        escape(when)
    );
    for review in reviews {
        connection(&mut body, review);
    }
    page(&format!("ferry review: {site}"), &body)
}

/// What waits for release at `site` (see `ferry release`), made at `when`.
pub fn release_page(site: &str, when: &str, pending: &[Pending]) -> String {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>Outgoing release at {}</h1>\n<p>Made {} by <code>ferry release --html</code>: \
         what this site exported that waits for release before it leaves. Nothing has been sent.</p>",
        escape(site),
        escape(when)
    );
    for p in pending {
        waiting(&mut body, p);
    }
    page(&format!("ferry release: {site}"), &body)
}

fn waiting(out: &mut String, pending: &Pending) {
    let _ = writeln!(out, "<h2>To {}</h2>", escape(&pending.peer));
    if pending.commits.is_empty() {
        let _ = writeln!(out, "<p>Nothing waits for release.</p>");
    } else {
        let _ = writeln!(
            out,
            "<p>{} commit{} wait{} ({} → {}), {} issue{}.</p>\n<details><summary>Commits</summary><ul>",
            pending.commits.len(),
            plural(pending.commits.len()),
            if pending.commits.len() == 1 { "s" } else { "" },
            escape(
                pending
                    .released
                    .as_deref()
                    .unwrap_or("nothing released yet")
            ),
            escape(pending.head.as_deref().unwrap_or("")),
            pending.issues.len(),
            plural(pending.issues.len())
        );
        for commit in &pending.commits {
            let _ = writeln!(out, "<li><code>{}</code></li>", escape(commit));
        }
        let _ = writeln!(out, "</ul></details>");
    }
    for issue in &pending.issues {
        outgoing(out, issue);
    }
    if !pending.verdicts.is_empty() {
        let _ = writeln!(
            out,
            "<table>\n<tr><th>verdict</th><th>commit</th><th>by</th><th>at</th><th>reason</th></tr>"
        );
        for v in &pending.verdicts {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.verdict),
                escape(&v.commit),
                escape(&v.by),
                escape(&v.at),
                escape(v.reason.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out, "</table>");
    }
}

fn outgoing(out: &mut String, issue: &OutgoingIssue) {
    let what = if issue.new_issue.is_some() {
        " (new to the peer)"
    } else if issue.removed {
        " (no longer shared)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<section class=\"issue\">\n<h3>{}{what}</h3>\n<p><code>{}</code></p>",
        escape(&issue.key),
        escape(&issue.path)
    );
    if let Some(reason) = &issue.held {
        let _ = writeln!(
            out,
            "<p class=\"warning\">Held by a rejection ({}): released only when a release names it.</p>",
            escape(reason)
        );
    }
    if let Some(new) = &issue.new_issue {
        fields_table(out, new);
    }
    changes(out, &issue.changes);
    if let Some((old, new)) = &issue.description {
        let _ = writeln!(
            out,
            "<p>Description, word by word:</p>\n<pre>{}</pre>",
            word_diff(old, new)
        );
    }
    comments(out, &issue.added_comments);
    for c in &issue.removed_comments {
        let _ = writeln!(
            out,
            "<p><del>Comment removed</del> by {}</p>",
            escape(&c.author)
        );
    }
    attachments(out, &issue.added_attachments, &issue.removed_attachments);
    let stays = issue.dropped.describe();
    if !stays.is_empty() {
        let _ = writeln!(
            out,
            "<p>Stays here (the outgoing rule left it out): {}</p>",
            escape(&stays)
        );
    }
    let _ = writeln!(out, "</section>");
}

fn connection(out: &mut String, review: &Review) {
    let _ = writeln!(out, "<h2>From {}</h2>", escape(&review.peer));
    if review.review_required {
        let _ = match &review.approved {
            Some(a) => writeln!(
                out,
                "<p>Review required; approved up to <code>{}</code> by {} at {}.</p>",
                escape(&a.commit),
                escape(&a.by),
                escape(&a.at)
            ),
            None => writeln!(out, "<p>Review required; nothing approved yet.</p>"),
        };
        for r in &review.rejected {
            let _ = writeln!(
                out,
                "<p class=\"warning\">Rejected <code>{}</code> by {} at {}: {}</p>",
                escape(&r.commit),
                escape(&r.by),
                escape(&r.at),
                escape(r.reason.as_deref().unwrap_or(""))
            );
        }
    }
    if review.issues.is_empty() && review.refused_paths.is_empty() {
        let _ = writeln!(out, "<p>Nothing pending.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<p>{} commit{} pending ({} → {}), {} issue{}.</p>",
        review.commits.len(),
        plural(review.commits.len()),
        escape(review.applied.as_deref().unwrap_or("nothing applied yet")),
        escape(review.head.as_deref().unwrap_or("")),
        review.issues.len(),
        plural(review.issues.len())
    );
    if !review.commits.is_empty() {
        let _ = writeln!(
            out,
            "<details open><summary>Commits</summary>\n<table>\n<tr><th>commit</th><th>signed by</th></tr>"
        );
        for commit in &review.commits {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(commit),
                escape(
                    review
                        .signers
                        .get(commit)
                        .map_or("unsigned", String::as_str)
                )
            );
        }
        let _ = writeln!(out, "</table></details>");
    }
    for path in &review.refused_paths {
        let _ = writeln!(
            out,
            "<p class=\"error\">Refused: <code>{}</code> (outside issues/)</p>",
            escape(path)
        );
    }
    for issue in &review.issues {
        pending(out, issue);
    }
}

fn pending(out: &mut String, issue: &PendingIssue) {
    let remote = issue.remote_key.as_deref().unwrap_or(&issue.path);
    let local = issue
        .local_key
        .as_deref()
        .map_or_else(|| " (new here)".to_string(), |k| format!(" → {k}"));
    let _ = writeln!(
        out,
        "<section class=\"issue\">\n<h3>{}{}{}</h3>\n<p><code>{}</code></p>",
        escape(remote),
        escape(&local),
        if issue.deleted {
            " <span class=\"warning\">deleted by the peer</span>"
        } else {
            ""
        },
        escape(&issue.path)
    );
    match &issue.new_issue {
        Some(new) => fields_table(out, new),
        None => changes(out, &issue.changes),
    }
    // A new issue's description is in its table already.
    if let Some((old, new)) = issue
        .description
        .as_ref()
        .filter(|_| issue.new_issue.is_none())
    {
        let _ = writeln!(
            out,
            "<p>Description, word by word:</p>\n<pre>{}</pre>",
            word_diff(old, new)
        );
    }
    comments(out, &issue.added_comments);
    attachments(out, &issue.added_attachments, &issue.removed_attachments);
    for miss in &issue.unmapped {
        let _ = writeln!(out, "<p class=\"warning\">Not mapped: {}</p>", escape(miss));
    }
    let verdict = match &issue.verdict {
        Verdict::Create { project } => format!("create an issue in {}", escape(project)),
        Verdict::Update {
            changes: local,
            comments,
            delete,
        } => {
            let mut parts: Vec<String> = local
                .iter()
                .map(|c| {
                    format!(
                        "{}: {} → {}",
                        escape(&c.field),
                        escape(&value(c.old.as_ref())),
                        escape(&value(c.new.as_ref()))
                    )
                })
                .collect();
            if *comments > 0 {
                parts.push(format!("add {comments} comment{}", plural(*comments)));
            }
            if *delete {
                parts.push("delete the local issue".into());
            }
            format!("update: {}", parts.join("; "))
        }
        Verdict::Nothing => "nothing changes here".into(),
        Verdict::Skip => "skipped by the incoming rule".into(),
        Verdict::Error { message } => {
            format!("<span class=\"error\">error: {}</span>", escape(message))
        }
    };
    let _ = writeln!(
        out,
        "<p class=\"verdict\">The incoming rule would: {verdict}</p>\n</section>"
    );
}

/// A new issue's fields, and its description.
fn fields_table(out: &mut String, new: &crate::replica::Replica) {
    let _ = writeln!(out, "<table>");
    for (name, value) in [
        ("summary", new.summary.as_str()),
        ("type", &new.issue_type),
        ("status", &new.status),
        ("priority", new.priority.as_deref().unwrap_or("")),
        ("assignee", new.assignee.as_deref().unwrap_or("")),
        ("labels", &new.labels.join(", ")),
    ] {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(value));
    }
    let _ = writeln!(out, "</table>");
    if let Some(description) = new.description.as_deref().filter(|d| !d.is_empty()) {
        let _ = writeln!(out, "<pre>{}</pre>", escape(description));
    }
}

fn comments(out: &mut String, added: &[crate::model::Comment]) {
    for c in added {
        let _ = writeln!(
            out,
            "<p><ins>New comment</ins> by {} at {}{}:</p>\n<pre>{}</pre>",
            escape(&c.author),
            escape(&crate::model::format_timestamp(&c.created)),
            if c.internal { " (internal)" } else { "" },
            escape(&c.body)
        );
    }
}

fn attachments(
    out: &mut String,
    added: &[crate::model::Attachment],
    removed: &[crate::model::Attachment],
) {
    if added.is_empty() && removed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th></th><th>attachment</th><th>bytes</th><th>sha256</th></tr>"
    );
    for (mark, list) in [("<ins>new</ins>", added), ("<del>removed</del>", removed)] {
        for a in list {
            let _ = writeln!(
                out,
                "<tr><td>{mark}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&a.name),
                a.size,
                escape(&a.sha256)
            );
        }
    }
    let _ = writeln!(out, "</table>");
}

fn changes(out: &mut String, changes: &[FieldChange]) {
    let shown: Vec<&FieldChange> = changes
        .iter()
        .filter(|c| c.field != "description")
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>field</th><th>was</th><th>now</th></tr>"
    );
    for c in shown {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><del>{}</del></td><td><ins>{}</ins></td></tr>",
            escape(&c.field),
            escape(&value(c.old.as_ref())),
            escape(&value(c.new.as_ref()))
        );
    }
    let _ = writeln!(out, "</table>");
}

fn value(v: Option<&FieldValue>) -> String {
    match v {
        None => "(none)".into(),
        Some(FieldValue::String(s)) => s.clone(),
        Some(FieldValue::Array(items)) => {
            let items: Vec<String> = items.iter().map(|i| value(Some(i))).collect();
            items.join(", ")
        }
        Some(other) => other.to_string(),
    }
}

/// Runs of removed and added words as `<del>` and `<ins>`, escaped.
fn word_diff(old: &str, new: &str) -> String {
    let mut out = String::new();
    for (tag, run) in word_runs(old, new) {
        let text = escape(&run);
        let _ = match tag {
            ChangeTag::Equal => write!(out, "{text}"),
            ChangeTag::Delete => write!(out, "<del>{text}</del>"),
            ChangeTag::Insert => write!(out, "<ins>{text}</ins>"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_stay_text() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\nc");
    }

    #[test]
    fn a_page_forbids_scripts_and_fetches_whatever_its_text() {
        let html = page("<b>t</b>", "<p>body</p>");
        assert!(html.contains("default-src 'none'; style-src 'unsafe-inline'"));
        assert!(html.contains("<title>&lt;b&gt;t&lt;/b&gt;</title>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_word_diff_marks_runs_and_escapes_them() {
        assert_eq!(
            word_diff("the <old> text", "the <new> text"),
            "the <del>&lt;old&gt;</del><ins>&lt;new&gt;</ins> text"
        );
    }
}
