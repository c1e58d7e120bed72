//! Message rendering: markdown (pulldown-cmark), bare URLs and domain names
//! made links, then sanitised (ammonia) to the original's whitelist — `a`,
//! `abbr`, `acronym`, `b`, `code`, `em`, `i`, `strong` — with every link
//! `rel="nofollow"`. Other tags are stripped and their text kept (the text
//! of `script` and `style` is dropped too).

use pulldown_cmark::{CowStr, Event, Parser, Tag, TagEnd};
use std::collections::{HashMap, HashSet};

/// Top-level domains a bare name must end with to become a link.
const TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "io", "dev", "app", "ai", "co", "me", "info",
    "biz", "name", "uk", "us", "ca", "de", "fr", "es", "it", "nl", "eu", "jp", "cn", "ru", "br",
    "au", "in", "ch", "se", "no", "fi", "dk", "pl", "be", "at", "ie", "nz", "tv", "xyz", "site",
    "online", "tech", "blog", "news", "cloud",
];

/// Renders message source to the HTML the API shows.
pub fn render(source: &str) -> String {
    let mut events: Vec<Event<'_>> = Vec::new();
    let mut link_depth = 0usize;
    let mut code_depth = 0usize;
    let mut text = String::new();
    let flush = |text: &mut String, events: &mut Vec<Event<'_>>, linkify_it: bool| {
        if text.is_empty() {
            return;
        }
        if linkify_it {
            events.push(Event::InlineHtml(CowStr::from(linkify(text))));
        } else {
            events.push(Event::Text(CowStr::from(std::mem::take(text))));
        }
        text.clear();
    };
    for event in Parser::new(source) {
        match event {
            Event::Text(t) => text.push_str(&t),
            other => {
                flush(&mut text, &mut events, link_depth == 0 && code_depth == 0);
                match &other {
                    Event::Start(Tag::Link { .. }) => link_depth += 1,
                    Event::End(TagEnd::Link) => link_depth = link_depth.saturating_sub(1),
                    Event::Start(Tag::CodeBlock(_)) => code_depth += 1,
                    Event::End(TagEnd::CodeBlock) => code_depth = code_depth.saturating_sub(1),
                    _ => {}
                }
                events.push(other);
            }
        }
    }
    flush(&mut text, &mut events, link_depth == 0 && code_depth == 0);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    sanitize(&html).trim().to_string()
}

/// Sanitises HTML to the whitelist.
pub fn sanitize(html: &str) -> String {
    let tags: HashSet<&str> = ["a", "abbr", "acronym", "b", "code", "em", "i", "strong"].into();
    let attributes: HashMap<&str, HashSet<&str>> = HashMap::from([
        ("a", HashSet::from(["href", "title"])),
        ("abbr", HashSet::from(["title"])),
        ("acronym", HashSet::from(["title"])),
    ]);
    ammonia::Builder::default()
        .tags(tags)
        .tag_attributes(attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("nofollow"))
        .clean(html)
        .to_string()
}

/// Escapes text for HTML (text and attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with bare URLs (`http://…`, `https://…`) and domain names
/// (`example.com/path`) made into links; trailing punctuation stays out.
pub fn linkify(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut previous: Option<char> = None;
    while !rest.is_empty() {
        let starts_word = previous.is_none_or(|p| !(p.is_alphanumeric() || "@.-/_:".contains(p)));
        if starts_word {
            if let Some(len) = link_at(rest) {
                let (link, tail) = rest.split_at(len);
                let href = if has_scheme(link) {
                    link.to_string()
                } else {
                    format!("http://{link}")
                };
                out.push_str(&format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&href),
                    escape(link)
                ));
                previous = link.chars().last();
                rest = tail;
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push_str(&escape(&c.to_string()));
        previous = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn has_scheme(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The length of the link that starts `s`, if one does.
fn link_at(s: &str) -> Option<usize> {
    let end = s
        .find(|c: char| c.is_whitespace() || "<>\"'`".contains(c))
        .unwrap_or(s.len());
    let mut candidate = &s[..end];
    // Trailing punctuation is not part of the link.
    while let Some(last) = candidate.chars().last() {
        if ".,;:!?)]}*_".contains(last) {
            candidate = &candidate[..candidate.len() - last.len_utf8()];
        } else {
            break;
        }
    }
    let (scheme_len, rest) = if has_scheme(candidate) {
        let at = candidate.find("//").map(|i| i + 2)?;
        (at, &candidate[at..])
    } else {
        (0, candidate)
    };
    let host_end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return None;
    }
    if scheme_len == 0 {
        let labels: Vec<&str> = host.split('.').collect();
        let tld = labels.last()?.to_ascii_lowercase();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) || !TLDS.contains(&tld.as_str())
        {
            return None;
        }
    }
    Some(candidate.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_outputs() {
        assert_eq!(render("hello *world*!"), "hello <em>world</em>!");
        assert_eq!(render("*hello* world!"), "<em>hello</em> world!");
        assert_eq!(
            render("hello http://foo.com!"),
            "hello <a href=\"http://foo.com\" rel=\"nofollow\">http://foo.com</a>!"
        );
        assert_eq!(
            render("hello foo.com!"),
            "hello <a href=\"http://foo.com\" rel=\"nofollow\">foo.com</a>!"
        );
    }

    #[test]
    fn sanitised() {
        assert_eq!(render("# title"), "title");
        assert_eq!(render("<script>alert(1)</script>hi"), "hi");
        assert_eq!(render("<b onclick=\"x()\">b</b>"), "<b>b</b>");
        assert_eq!(
            render("[x](javascript:alert(1))"),
            "<a rel=\"nofollow\">x</a>"
        );
        assert_eq!(
            render("[x](https://a.org \"t\")"),
            "<a href=\"https://a.org\" title=\"t\" rel=\"nofollow\">x</a>"
        );
        assert_eq!(render("a < b & c"), "a &lt; b &amp; c");
        assert_eq!(render("`foo.com`"), "<code>foo.com</code>");
    }

    #[test]
    fn linkify_edges() {
        assert_eq!(linkify("e.g. main.rs x"), "e.g. main.rs x");
        assert_eq!(linkify("mail a@b.com"), "mail a@b.com");
        assert_eq!(
            linkify("(see https://a.org/x?y=1&z=2)."),
            "(see <a href=\"https://a.org/x?y=1&amp;z=2\">https://a.org/x?y=1&amp;z=2</a>)."
        );
    }
}
