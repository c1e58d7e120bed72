//! The ui service: serves the page at `/` (a placeholder until the chat
//! page lands).

use axum::response::Html;
use shimeji::prelude::*;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>MicroFlack!</title></head>
<body>
<h1>MicroFlack!</h1>
<p>The chat page is on its way. The API is up: <code>/api/users</code>, <code>/api/tokens</code>,
<code>/api/messages</code>, and Socket.IO at <code>/socket.io</code>.</p>
</body>
</html>
"#;

/// The ui service.
#[derive(Default, Dependencies)]
pub struct Ui;

#[service(name = "ui")]
impl Ui {
    /// `GET /`: the page.
    #[http(GET, "/")]
    async fn index(&self) -> Html<&'static str> {
        Html(PAGE)
    }
}
