//! The HTTP/1.1 server: hyper's connection handling under our own accept loop, because
//! `axum::serve` has no header read timeout and a slowloris client could hold sockets and
//! tasks for ever. Headers must arrive within the header timeout (hyper closes the
//! connection otherwise); bodies within the body timeout (see the router's body layer).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for open connections to finish their requests (the caller bounds that wait).
///
/// Every request carries [`ConnectInfo`] (the peer `SocketAddr`) for the rate limiter and login limits.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            let app = app.clone();
            async move { app.oneshot(req).await.map_err(|e: Infallible| match e {}) }
        });
        // No upgrades: nothing here speaks WebSocket.
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts and resets by slow or vanished clients land here: routine.
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Connection-level accept errors (a client that reset before accept) are routine; running
/// out of file descriptors is not, and a pause lets some close before the next try.
async fn accept_error(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
