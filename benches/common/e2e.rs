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
/// between them by more than the 2 % in question. This compares each variant with the variant
/// `floor(i)` it is measured against in back-to-back pairs: `ZOHO_BENCH_ROUNDS` rounds (default
/// 61), each running every pair once, `requests` per side (`time(i, requests)` runs variant `i`),
/// the pair's order alternating between rounds so that neither side always goes first. Short
/// pairs see the same machine; the median over rounds of each pair's ratio is what is printed,
/// with the median requests/s of each variant.
///
/// Beside the wall-clock ratio it prints the ratio of the client thread's CPU time per request
/// (the floor's over the variant's, so that above 1 is faster here too; Linux only). The layer
/// runs on that thread; the figure leaves out the server thread and the time the VM's scheduler
/// hands elsewhere, which move the wall-clock ratio by more than the layer's own cost.
pub async fn interleaved<F>(
    title: &str,
    names: &[&str],
    requests: u64,
    floor: impl Fn(usize) -> usize,
    mut time: impl FnMut(usize, u64) -> F,
) where
    F: std::future::Future<Output = std::time::Duration>,
{
    let rounds = crate::common::rounds(61);
    if rounds == 0 {
        return;
    }
    let pairs: Vec<(usize, usize)> = (0..names.len())
        .map(|i| (i, floor(i)))
        .filter(|(i, f)| i != f)
        .collect();
    let mut rps = vec![Vec::new(); names.len()];
    let mut ratios = vec![Vec::new(); names.len()];
    let mut cpu_ratios = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        for &(i, f) in &pairs {
            let order = if round % 2 == 0 { [f, i] } else { [i, f] };
            let mut rate = [0.0; 2];
            let mut cpu = [None; 2];
            for (slot, &v) in order.iter().enumerate() {
                let cpu_before = thread_cpu();
                let took = time(v, requests).await;
                cpu[slot] = thread_cpu()
                    .zip(cpu_before)
                    .map(|(after, before)| after - before);
                rate[slot] = requests as f64 / took.as_secs_f64();
                rps[v].push(rate[slot]);
            }
            // Slot of the variant, slot of its floor.
            let (s_i, s_f) = if order[0] == f { (1, 0) } else { (0, 1) };
            ratios[i].push(rate[s_i] / rate[s_f]);
            if let (Some(of_i), Some(of_f)) = (cpu[s_i], cpu[s_f]) {
                cpu_ratios[i].push(of_f.as_secs_f64() / of_i.as_secs_f64());
            }
        }
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
    };
    eprintln!("\n{title}, in pairs ({rounds} rounds x {requests} requests per variant and pair):");
    eprintln!(
        "| variant | requests/s (median) | ratio (median, min..max) | client CPU ratio (median, min..max) | to |"
    );
    eprintln!("|---|---|---|---|---|");
    let ratio = |xs: &Vec<f64>| {
        if xs.is_empty() {
            return "—".to_owned();
        }
        let (r, lo, hi) = median(xs.clone());
        format!("{r:.3} ({lo:.3}..{hi:.3})")
    };
    for (i, name) in names.iter().enumerate() {
        let (rate, _, _) = median(rps[i].clone());
        let (wall, cpu) = (ratio(&ratios[i]), ratio(&cpu_ratios[i]));
        let to = names[floor(i)];
        eprintln!("| {name} | {rate:.0} | {wall} | {cpu} | {to} |");
    }
}

/// The CPU time the calling thread has used so far, user and system.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<std::time::Duration> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
    let micros = |t: nix::sys::time::TimeVal| {
        std::time::Duration::from_secs(t.tv_sec() as u64)
            + std::time::Duration::from_micros(t.tv_usec() as u64)
    };
    Some(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Not measured off Linux: the column reads "—".
#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<std::time::Duration> {
    None
}
