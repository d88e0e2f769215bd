//! The floor for `cargo xtask bench-gateway`: a hello-world server on the gateway's own HTTP
//! stack (axum, hyper, tokio), answering a small JSON body, with TCP_NODELAY as the gateway has.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new().route(
        "/",
        get(|| async { axum::Json(serde_json::json!({"decision": "allow"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).tcp_nodelay(true).await
}
