//! The minimal HTTP/1.1 server the end-to-end benchmarks send to: `200` with an empty body, on a
//! thread and current-thread runtime of its own, so that it costs as little as possible and the
//! client side — where the layer runs — is what the figures measure.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The server's answer says whether the request carried an `Authorization` header.
pub const AUTHORIZED: &str = "x-authorized";

/// Starts the server on a thread of its own and returns its address.
pub fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        crate::common::current_thread().block_on(async move {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|request: Request<_>| {
                        let mut response = Response::new(Empty::<Bytes>::new());
                        if request.headers().contains_key(AUTHORIZATION) {
                            response
                                .headers_mut()
                                .insert(AUTHORIZED, HeaderValue::from_static("1"));
                        }
                        async { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}
