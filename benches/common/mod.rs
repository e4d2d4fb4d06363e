//! Set-up the benchmarks share.

use tokio::runtime::Runtime;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::Simulator;
use zoho_auth::{Accounts, TokenCache};

/// A current-thread runtime with I/O and timers.
pub fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A simulator started on `runtime` and a cache holding a valid (one-hour) token from it, plus
/// the token itself for the designs that hold their own copy. The cache needs no network while
/// the token is fresh (its refresh-ahead window opens after ~50 minutes).
pub fn cached_token(runtime: &Runtime) -> (Simulator, TokenCache, String) {
    let (zoho, cache) = runtime.block_on(async {
        let zoho = Simulator::start().await.unwrap();
        let accounts = Accounts::custom(&zoho.url()).unwrap();
        let client = AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret()).unwrap();
        let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
        cache.token().await.unwrap();
        (zoho, cache)
    });
    let token = cache.cached().unwrap().access_token().expose().to_owned();
    (zoho, cache, token)
}

/// Requests every counting run sends before the `n` it counts, so one-time set-up (the first
/// request's allocations, lazily built state) falls outside the difference of two runs.
pub const COUNT_WARM_UP: u64 = 1_000;

/// `ZOHO_BENCH_COUNT=<variant>:<n>`: no criterion run, but [`COUNT_WARM_UP`] requests then `n`
/// requests through one variant. For counting instructions, which unlike time do not drift on a
/// shared machine: run under `valgrind --tool=callgrind` with `n` = 0 and 20,000 and divide the
/// difference by 20,000 (`benches/README.md`).
pub fn count_mode() -> Option<(String, u64)> {
    let spec = std::env::var("ZOHO_BENCH_COUNT").ok()?;
    let (name, n) = spec
        .split_once(':')
        .expect("ZOHO_BENCH_COUNT=<variant>:<requests>");
    let n = n.parse().expect("ZOHO_BENCH_COUNT: a request count");
    Some((name.to_owned(), n))
}

/// `ZOHO_BENCH_ROUNDS`: how many rounds an interleaved summary runs (`default` when unset; 0
/// skips it).
#[allow(dead_code)] // `connections` runs no interleaved summary
pub fn rounds(default: usize) -> usize {
    std::env::var("ZOHO_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
