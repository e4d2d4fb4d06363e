//! What the end-to-end benchmarks share: the minimal HTTP/1.1 server they send to (`200` with an
//! empty body, on a thread and current-thread runtime of its own, so that it costs as little as
//! possible and the client side — where the layer runs — is what the figures measure), and the
//! interleaved comparison of their variants.

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

/// [`crate::common::count_mode`] for an end-to-end bench: the warm-up, then `n` requests, each
/// run timed by `time`.
pub async fn count<F>(name: &str, n: u64, mut time: impl FnMut(u64) -> F)
where
    F: std::future::Future<Output = std::time::Duration>,
{
    for n in [crate::common::COUNT_WARM_UP, n] {
        let took = time(n).await;
        eprintln!("{name}: {n} requests in {took:?}");
    }
}

/// Criterion measures variants one after another, and on a shared VM the machine's speed drifts
/// between them by more than the 2 % in question. This runs them interleaved: `ZOHO_BENCH_ROUNDS`
/// rounds (default 15) of `requests` per variant, in rotated order (`time(i, requests)` runs
/// variant `i`), and prints the median requests/s of each and the median per-round ratio to the
/// variant `floor(i)` it is compared with.
pub async fn interleaved<F>(
    title: &str,
    names: &[&str],
    requests: u64,
    floor: impl Fn(usize) -> usize,
    mut time: impl FnMut(usize, u64) -> F,
) where
    F: std::future::Future<Output = std::time::Duration>,
{
    let rounds = crate::common::rounds(15);
    if rounds == 0 {
        return;
    }
    let mut rps = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for k in 0..names.len() {
            let i = (round + k) % names.len();
            let took = time(i, requests).await;
            rps[i].push(requests as f64 / took.as_secs_f64());
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
    };
    eprintln!("\n{title}, interleaved ({rounds} rounds x {requests} requests per variant):");
    eprintln!("| variant | requests/s (median) | ratio (median, min..max) | to |");
    eprintln!("|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let (rate, _, _) = median(rps[i].clone());
        let (r, lo, hi) = median((0..rounds).map(|r| rps[i][r] / rps[floor(i)][r]).collect());
        let to = names[floor(i)];
        eprintln!("| {name} | {rate:.0} | {r:.3} ({lo:.3}..{hi:.3}) | {to} |");
    }
}
