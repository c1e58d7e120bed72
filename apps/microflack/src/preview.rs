//! Link previews: for the first links of a rendered message, the page's
//! title and description, appended as the original does
//! (`<blockquote><p><a href=URL>title</a></p><p>description</p></blockquote>`),
//! but safely: http and https only; no loopback, private, link-local or
//! otherwise internal address, checked on every address a name resolves to
//! and on every redirect (unless `LINK_PREVIEWS_ALLOW_PRIVATE=1`); a
//! timeout, a size limit, at most [`MAX_LINKS`] fetches a message; title
//! and description escaped.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::render::escape;

/// The config key that lets previews reach private addresses (tests).
pub const ALLOW_PRIVATE_KEY: &str = "LINK_PREVIEWS_ALLOW_PRIVATE";
/// Links previewed per message, at most.
pub const MAX_LINKS: usize = 3;
/// Bytes of a page read, at most.
pub const MAX_PAGE: usize = 512 * 1024;
/// How long one page may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Redirects followed, at most.
pub const MAX_REDIRECTS: usize = 3;
const MAX_TITLE: usize = 300;
const MAX_DESCRIPTION: usize = 1000;

/// Whether previews may fetch from `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names for the preview client, keeping only allowed addresses.
struct Filtered {
    allow_private: bool,
}

impl Resolve for Filtered {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` has no public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a URL may be fetched: http or https, and a host that is not a
/// refused address literal (names are checked as they resolve).
fn allowed_url(url: &reqwest::Url, allow_private: bool) -> bool {
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    match url.host() {
        None => false,
        Some(url::Host::Domain(_)) => true,
        Some(url::Host::Ipv4(ip)) => allow_private || is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => allow_private || is_public(IpAddr::V6(ip)),
    }
}

/// Fetches pages for previews.
#[derive(Clone)]
pub struct Previewer {
    client: reqwest::Client,
    allow_private: bool,
}

impl Previewer {
    /// A previewer; `allow_private` lets it reach internal addresses.
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if allowed_url(attempt.url(), allow_private) {
                attempt.follow()
            } else {
                attempt.error("redirect to a refused address")
            }
        });
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(policy)
            .no_proxy()
            .user_agent("MicroFlack link preview")
            .dns_resolver(Arc::new(Filtered { allow_private }))
            .build()?;
        Ok(Previewer {
            client,
            allow_private,
        })
    }

    /// The previews of the links of `html`, to append to it ("" if none).
    pub async fn previews(&self, html: &str) -> String {
        let mut out = String::new();
        for href in links(html).into_iter().take(MAX_LINKS) {
            if let Some((title, description)) = self.page(&href).await {
                out.push_str(&format!(
                    "<blockquote><p><a href=\"{}\">{}</a></p><p>{}</p></blockquote>",
                    escape(&href),
                    escape(&title),
                    escape(&description)
                ));
            }
        }
        out
    }

    /// The title (or the URL) and description of a page answering 200.
    async fn page(&self, href: &str) -> Option<(String, String)> {
        let url = reqwest::Url::parse(href).ok()?;
        if !allowed_url(&url, self.allow_private) {
            tracing::debug!(url = href, "link preview refused");
            return None;
        }
        let mut response = match self.client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(url = href, error = %e, "link preview fetch failed");
                return None;
            }
        };
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_PAGE - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_PAGE {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => return None,
            }
        }
        let page = String::from_utf8_lossy(&body);
        let title = title(&page).unwrap_or_else(|| href.to_string());
        let description = description(&page).unwrap_or_else(|| "No description found.".into());
        Some((clip(&title, MAX_TITLE), clip(&description, MAX_DESCRIPTION)))
    }
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The `href` of every `<a>` in sanitised HTML, in order, unescaped.
pub fn links(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<a ") {
        rest = &rest[at + 3..];
        let end = tag_end(rest);
        if let Some(href) = attribute(&rest[..end], "href") {
            found.push(href);
        }
    }
    found
}

/// The text of the first `<title>`, trimmed; `None` if there is none.
pub fn title(page: &str) -> Option<String> {
    let lower = page.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let text = unescape(page[start..end].trim());
    (!text.is_empty()).then_some(text)
}

/// The `content` of the first `<meta name="description">`, trimmed.
pub fn description(page: &str) -> Option<String> {
    let lower = page.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at + 5;
        let end = start + tag_end(&page[start..]);
        let tag = &page[start..end];
        if attribute(tag, "name").is_some_and(|n| n.eq_ignore_ascii_case("description")) {
            return attribute(tag, "content").map(|c| c.trim().to_string());
        }
        from = end;
    }
    None
}

/// Where the tag whose inside starts `text` ends: its `>` outside quotes.
fn tag_end(text: &str) -> usize {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i,
            _ => {}
        }
    }
    text.len()
}

/// The value of attribute `name` in the inside of a tag, unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(name) {
        let start = from + at;
        from = start + name.len();
        let before_ok = start == 0 || lower.as_bytes()[start - 1].is_ascii_whitespace();
        let after = lower[from..].trim_start();
        if !before_ok || !after.starts_with('=') {
            continue;
        }
        let value_at = tag.len() - after.len() + 1;
        let value = tag[value_at..].trim_start();
        let (text, _) = match value.chars().next()? {
            q @ ('"' | '\'') => value[1..].split_once(q)?,
            _ => value
                .split_once(|c: char| c.is_whitespace() || c == '/')
                .unwrap_or((value, "")),
        };
        return Some(unescape(text));
    }
    None
}

/// Decodes the common character references.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn parsing() {
        let page = "<html><head><TITLE> foo &amp; bar </TITLE><meta charset=utf-8><meta name=\"Description\" content=\" foo descr \"></head></html>";
        assert_eq!(title(page).as_deref(), Some("foo & bar"));
        assert_eq!(description(page).as_deref(), Some("foo descr"));
        assert_eq!(title("<p>none</p>"), None);
        assert_eq!(
            links("x <a href=\"http://a.org/?a=1&amp;b=2\" rel=\"nofollow\">y</a> <a href='http://b.org'>"),
            vec!["http://a.org/?a=1&b=2".to_string(), "http://b.org".to_string()]
        );
    }

    #[test]
    fn urls() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(allowed_url(&u("http://example.com/"), false));
        assert!(!allowed_url(&u("ftp://example.com/"), false));
        assert!(!allowed_url(&u("http://127.0.0.1:8000/"), false));
        assert!(allowed_url(&u("http://127.0.0.1:8000/"), true));
        assert!(!allowed_url(&u("http://[::1]/"), false));
    }
}
