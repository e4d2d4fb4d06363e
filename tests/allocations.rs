//! The cached-token path allocates nothing: per request it costs exactly the heap allocations of
//! `tower_http`'s `AddAuthorization`, which inserts a static header — and, when the request's
//! header map has room for it, exactly those of the bare service: none. (A request that already
//! carries headers also pays for copying its header map, kept to replay it after a token error.)
//! Around an inner service whose clone allocates (a `BoxCloneService`), it still adds none.
//!
//! One test in this binary, on a current-thread runtime, so the counting allocator sees only it.

use std::convert::Infallible;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::util::BoxCloneService;
use tower::{service_fn, Service};
use tower_http::auth::AddAuthorizationLayer;
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::Simulator;
use zoho_auth::{Accounts, RequestBody, TokenCache, ZohoAuthLayer};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const ROUNDS: u64 = 1_000;

async fn no_op<B>(_: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    Ok(Response::new(Empty::new()))
}

fn request(room_for_headers: bool) -> Request<Empty<Bytes>> {
    let mut request = Request::get(http::Uri::from_static(
        "https://www.zohoapis.com/crm/v8/Leads",
    ))
    .body(Empty::new())
    .unwrap();
    if room_for_headers {
        *request.headers_mut() = http::HeaderMap::with_capacity(4);
    }
    request
}

/// Heap allocations per request through `service`, beyond building the request.
async fn allocations_per_request<S>(service: &mut S, room_for_headers: bool) -> u64
where
    S: Service<Request<Empty<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let requests: Vec<_> = (0..ROUNDS).map(|_| request(room_for_headers)).collect();
    let before = dhat::HeapStats::get().total_blocks;
    for request in requests {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        service.call(request).await.unwrap();
    }
    (dhat::HeapStats::get().total_blocks - before) / ROUNDS
}

#[test]
fn the_cached_path_allocates_no_more_than_a_static_header() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let zoho = Simulator::start().await.unwrap();
        let accounts = Accounts::custom(&zoho.url()).unwrap();
        let client = AccountsClient::new(accounts, zoho.client_id(), zoho.client_secret()).unwrap();
        let cache = TokenCache::new(client, zoho.mint_refresh_token(&[]));
        cache.token().await.unwrap();

        let mut bare_service = service_fn(no_op::<Empty<Bytes>>);
        let mut floor = tower::Layer::layer(
            &AddAuthorizationLayer::bearer("static-token").as_sensitive(true),
            service_fn(no_op::<Empty<Bytes>>),
        );
        let layer = ZohoAuthLayer::new(cache.clone())
            .allow_host("www.zohoapis.com")
            .unwrap();
        let mut zoho_auth =
            tower::Layer::layer(&layer, service_fn(no_op::<RequestBody<Empty<Bytes>>>));

        let bare = allocations_per_request(&mut bare_service, false).await;
        let floor = allocations_per_request(&mut floor, false).await;
        let ours = allocations_per_request(&mut zoho_auth, false).await;
        assert_eq!(
            cache.stats().token_requests,
            1,
            "every request used the cached token"
        );
        assert!(
            floor > bare,
            "inserting into an empty header map allocates: {floor} vs {bare}"
        );
        assert_eq!(
            ours, floor,
            "the cached-token path allocates beyond the header insert: {ours} vs {floor}"
        );

        let bare = allocations_per_request(&mut bare_service, true).await;
        let ours = allocations_per_request(&mut zoho_auth, true).await;
        assert_eq!(bare, 0, "the bare service allocates nothing");
        assert_eq!(
            ours, 0,
            "with room for the header, the layer allocates nothing: {ours}"
        );

        // An inner service whose clone allocates: the layer never clones it per request (replays
        // clone a shared copy), so it adds nothing to what the service itself allocates.
        let mut boxed_bare = BoxCloneService::new(service_fn(no_op::<Empty<Bytes>>));
        let mut boxed_ours = tower::Layer::layer(
            &layer,
            BoxCloneService::new(service_fn(no_op::<RequestBody<Empty<Bytes>>>)),
        );
        let bare = allocations_per_request(&mut boxed_bare, true).await;
        let ours = allocations_per_request(&mut boxed_ours, true).await;
        assert!(bare > 0, "a boxed service allocates its future");
        assert_eq!(
            ours, bare,
            "around a service whose clone allocates, the layer allocates: {ours} vs {bare}"
        );
    });
}
