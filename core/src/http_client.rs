//! The outgoing HTTP client (Loki pushes, pull mode): HTTP or HTTPS with the system's roots.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The connector: plain HTTP or TLS with the system's root certificates.
pub type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client sending bodies of type `B`; an error when the system's root certificates
/// cannot be loaded.
pub fn client<B>() -> Result<Client<Https, B>, std::io::Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("loading the system's root certificates: {e}"),
            )
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
