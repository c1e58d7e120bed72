//! Link previews against a local page server: title and description, no
//! description, no title, an error page, a connection error, escaping,
//! private addresses refused unless allowed, and previews that survive a
//! stop (durable rendering).

mod common;

use common::{eventually, App, Auth, Backend, Data};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A page server on a free loopback port; counts the requests it gets.
struct Pages {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn page(path: &str) -> (u16, String) {
    match path {
        "/foo" => (200, "<html><head><title>foo</title><meta name=\"description\" content=\"foo descr\"></head></html>".into()),
        "/bar" => (200, "<html><head><title>bar</title></head><body>x</body></html>".into()),
        "/baz" => (200, "<html><head><META NAME=\"Description\" CONTENT=\"baz descr\"></head></html>".into()),
        "/evil" => (200, "<title><script>alert(1)</script></title><meta name=description content='\"><img src=x onerror=alert(1)>'>".into()),
        _ => (404, "<title>missing</title>".into()),
    }
}

impl Pages {
    async fn start() -> Pages {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, body) = page(&path);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Pages { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn link(url: &str, text: &str) -> String {
    format!("<a href=\"{url}\" rel=\"nofollow\">{text}</a>")
}

async fn html_of(app: &App, id: &serde_json::Value) -> String {
    app.get(&format!("/api/messages/{id}"), Auth::None).await.1["html"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_html(app: &App, id: &serde_json::Value, expected: &str) {
    let ok = eventually(Duration::from_secs(8), || async {
        html_of(app, id).await == expected
    })
    .await;
    assert!(
        ok,
        "expected {expected}\n     got {}",
        html_of(app, id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_as_the_original_shows_them() {
    let pages = Pages::start().await;
    let data = Data::new(Backend::Sqlite);
    let app = App::start(data.config()).await;
    app.register("susan", "dog").await;
    let token = app.login("susan", "dog").await;

    let foo_url = pages.url("/foo");
    let m = app.post(&token, &format!("hello {foo_url}!")).await;
    wait_html(
        &app,
        &m["id"],
        &format!(
            "hello {}!<blockquote><p><a href=\"{foo_url}\">foo</a></p><p>foo descr</p></blockquote>",
            link(&foo_url, &foo_url)
        ),
    )
    .await;

    let bar_url = pages.url("/bar");
    let m = app.post(&token, &format!("hello {bar_url}!")).await;
    wait_html(&app, &m["id"], &format!(
        "hello {}!<blockquote><p><a href=\"{bar_url}\">bar</a></p><p>No description found.</p></blockquote>",
        link(&bar_url, &bar_url)
    )).await;

    let baz_url = pages.url("/baz");
    let m = app.post(&token, &format!("hello {baz_url}!")).await;
    wait_html(
        &app,
        &m["id"],
        &format!(
            "hello {}!<blockquote><p><a href=\"{baz_url}\">{baz_url}</a></p><p>baz descr</p></blockquote>",
            link(&baz_url, &baz_url)
        ),
    )
    .await;

    // Title and description are escaped.
    let evil = pages.url("/evil");
    let m = app.post(&token, &format!("see {evil}")).await;
    wait_html(&app, &m["id"], &format!(
        "see {}<blockquote><p><a href=\"{evil}\">&lt;script&gt;alert(1)&lt;/script&gt;</a></p><p>&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</p></blockquote>",
        link(&evil, &evil)
    )).await;

    // An error page, a connection error, a bare name that does not
    // resolve: the link alone (the last is the original's own example).
    let missing = pages.url("/missing");
    let closed = "http://127.0.0.1:1/x";
    for (source, html) in [
        (
            format!("hello {missing}!"),
            format!("hello {}!", link(&missing, &missing)),
        ),
        (
            format!("hello {closed}!"),
            format!("hello {}!", link(closed, closed)),
        ),
        (
            "hello foo.com!".to_string(),
            format!("hello {}!", link("http://foo.com", "foo.com")),
        ),
    ] {
        let m = app.post(&token, &source).await;
        assert_eq!(m["html"], html.as_str());
        let id = m["id"].clone();
        // Settled: no longer due, and still the link alone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(html_of(&app, &id).await, html);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_by_default() {
    let pages = Pages::start().await;
    let data = Data::new(Backend::Sqlite);
    let config = data.config().set("LINK_PREVIEWS_ALLOW_PRIVATE", "0");
    let app = App::start(config).await;
    app.register("susan", "dog").await;
    let token = app.login("susan", "dog").await;
    let by_address = pages.url("/foo");
    let by_name = format!("http://localhost:{}/foo", pages.port);
    let m1 = app.post(&token, &format!("a {by_address}")).await;
    let m2 = app.post(&token, &format!("b {by_name}")).await;
    let m3 = app
        .post(
            &token,
            "c http://[::1]/ d http://169.254.169.254/latest/meta-data/",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pages.hits.load(Ordering::SeqCst),
        0,
        "no request reached the private address"
    );
    for m in [&m1, &m2, &m3] {
        let html = html_of(&app, &m["id"]).await;
        assert!(!html.contains("blockquote"), "{html}");
    }
    app.stop().await;
}

on_both!(previews_survive_a_stop);

/// A message whose previews were due when its instance stopped gets them
/// when the service runs again.
async fn previews_survive_a_stop(backend: Backend) {
    let pages = Pages::start().await;
    let data = Data::new(backend);
    let app = App::start(data.config()).await;
    app.stop().await;
    let foo_url = pages.url("/foo");
    let plain = format!("hi {}", link(&foo_url, &foo_url));
    {
        let pool = data.pool("MESSAGES_DATABASE_URL", "messages.sqlite").await;
        let now = microflack::api::now();
        sqlx::query(
            "INSERT INTO messages (created_at, updated_at, source, html, user_id, revision, previews_due)
             VALUES ($1, $2, $3, $4, 1, 0, 1)",
        )
        .bind(now)
        .bind(now)
        .bind(format!("hi {foo_url}"))
        .bind(&plain)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let app = App::start(data.config()).await;
    let (_, list) = app.get("/api/messages", Auth::None).await;
    let id = list["messages"][0]["id"].clone();
    wait_html(
        &app,
        &id,
        &format!(
            "{plain}<blockquote><p><a href=\"{foo_url}\">foo</a></p><p>foo descr</p></blockquote>"
        ),
    )
    .await;
    app.stop().await;
}
