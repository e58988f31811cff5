//! ferry's marker lines at the end of a Redmine description or note.
//!
//! Redmine has nowhere else to keep an origin that its search can find, so a text
//! ferry writes ends, after a blank line, with `ferry-origin: SITE:ID` and, for a
//! note written on someone else's behalf, `ferry-author: NAME`. Reading strips
//! them again, so peers never see them.

use crate::model::Origin;

const ORIGIN: &str = "ferry-origin: ";
const AUTHOR: &str = "ferry-author: ";

/// What the marker lines of a text said.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Trailer {
    pub origin: Option<Origin>,
    pub author: Option<String>,
}

/// The marker line of an origin.
pub(super) fn origin_line(origin: &Origin) -> String {
    format!("{ORIGIN}{}:{}", origin.site, origin.id)
}

/// Redmine stores line ends as CRLF; ferry's texts use LF.
pub(super) fn unix(text: &str) -> String {
    text.replace("\r\n", "\n")
}

/// `body` with its marker lines; `""` for no body and no markers.
pub(super) fn join(body: Option<&str>, origin: Option<&Origin>, author: Option<&str>) -> String {
    let mut lines = Vec::new();
    if let Some(author) = author {
        lines.push(format!("{AUTHOR}{author}"));
    }
    if let Some(origin) = origin {
        lines.push(origin_line(origin));
    }
    let body = body.unwrap_or("");
    match (body.is_empty(), lines.is_empty()) {
        (_, true) => body.to_string(),
        (true, false) => lines.join("\n"),
        (false, false) => format!("{body}\n\n{}", lines.join("\n")),
    }
}

/// The body (`None` when empty) and the markers of a text [`join`] wrote; a text
/// without markers is all body.
pub(super) fn split(text: &str) -> (Option<String>, Trailer) {
    let (body, tail) = match text.rfind("\n\n") {
        Some(at) if is_trailer(&text[at + 2..]) => (&text[..at], &text[at + 2..]),
        _ if is_trailer(text) => ("", text),
        _ => (text, ""),
    };
    let mut trailer = Trailer::default();
    for line in tail.lines() {
        if let Some(author) = line.strip_prefix(AUTHOR) {
            trailer.author = Some(author.to_string());
        } else if let Some((site, id)) = line.strip_prefix(ORIGIN).and_then(|o| o.split_once(':')) {
            trailer.origin = Some(Origin {
                site: site.into(),
                id: id.into(),
            });
        }
    }
    let body = (!body.is_empty()).then(|| body.to_string());
    (body, trailer)
}

fn is_trailer(text: &str) -> bool {
    !text.is_empty()
        && text.lines().all(|l| {
            l.starts_with(AUTHOR) || l.strip_prefix(ORIGIN).is_some_and(|o| o.contains(':'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            site: "support".into(),
            id: "c-12".into(),
        }
    }

    #[test]
    fn round_trips_every_combination() {
        for body in [None, Some("one line"), Some("two\n\nparagraphs\n")] {
            for origin in [None, Some(origin())] {
                for author in [None, Some("kevin")] {
                    let text = join(body, origin.as_ref(), author);
                    let (b, t) = split(&text);
                    assert_eq!(b.as_deref(), body.filter(|b| !b.is_empty()), "{text:?}");
                    assert_eq!(t.origin, origin, "{text:?}");
                    assert_eq!(t.author.as_deref(), author, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn a_text_that_only_mentions_a_marker_is_all_body() {
        let text = "see the line\nferry-origin: a:b\nabove";
        assert_eq!(split(text), (Some(text.to_string()), Trailer::default()));
    }
}
