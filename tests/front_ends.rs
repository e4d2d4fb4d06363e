//! Every front end of the layer behaves the same (issue 12): one table of requests — dead tokens,
//! replays, bodies that can and cannot be sent again, the host policy, connections — each run
//! through the tower layer over hyper-util, `ZohoReqwest` over `reqwest::Client`, and
//! `ZohoAuthMiddleware` in a `reqwest_middleware` chain, each against a simulator of its own. A
//! row's outcome (the answer, and which token each request sent below the front end carried) must
//! be the same in every column, and the one the row expects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Layer, Service, ServiceExt};
use zoho_auth::reqwest::{ZohoAuthMiddleware, ZohoReqwest};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections};
use zoho_auth::{ConnectionId, Connections, RequestBody, TokenWithheld, ZohoAuthLayer};

/// The front ends, a column each.
#[derive(Clone, Copy, Debug)]
enum Front {
    Tower,
    Reqwest,
    Middleware,
}

const FRONTS: [Front; 3] = [Front::Tower, Front::Reqwest, Front::Middleware];

/// A request body, as each front end's caller would build it.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Empty,
    /// In memory: `Full` for tower, `reqwest::Body::from(bytes)` for reqwest.
    Bytes(&'static [u8]),
    /// A stream whose size is known (an exact size hint).
    Sized(&'static [u8]),
    /// A stream of unknown size: never buffered, so never resent.
    Stream(&'static [u8]),
}

/// A stream of one chunk with no size hint.
struct Unsized(Option<Bytes>);

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }
}

type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

/// The request's headers, for a recorder of what was sent.
trait Headers {
    fn headers(&self) -> &HeaderMap;
}

impl<B> Headers for Request<B> {
    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
    }
}

impl Headers for reqwest::Request {
    fn headers(&self) -> &HeaderMap {
        reqwest::Request::headers(self)
    }
}

/// Records the `Authorization` header of every request sent through it.
#[derive(Clone)]
struct Recording<S> {
    inner: S,
    seen: Seen,
}

impl<S, R: Headers> Service<R> for Recording<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        self.seen.lock().unwrap().push(header);
        self.inner.call(request)
    }
}

/// The same, as a middleware after `ZohoAuthMiddleware` in a chain.
struct RecordingMiddleware(Seen);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for RecordingMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        self.0.lock().unwrap().push(header);
        next.run(request, extensions).await
    }
}

/// One request of a row.
#[derive(Clone, Debug)]
struct Call {
    method: Method,
    url: String,
    body: Sent,
    connection: Option<ConnectionId>,
}

/// What a request came to, the same way for every front end: the status, body and whether a
/// `TokenWithheld` said why the token stayed home; or the error's predicates.
type Answer = Result<(u16, String, bool), String>;

fn predicates(error: &zoho_auth::Error) -> String {
    let all = [
        ("transient", error.is_transient()),
        ("permanent", error.is_permanent()),
        ("invalid_grant", error.is_invalid_grant()),
        ("insecure", error.is_insecure()),
        ("body", error.is_body()),
        ("config", error.is_config()),
        ("not_connected", error.is_not_connected()),
    ];
    let held: Vec<_> = all
        .iter()
        .filter(|(_, held)| *held)
        .map(|(name, _)| *name)
        .collect();
    held.join("+")
}

fn zoho_error(error: &(dyn std::error::Error + 'static)) -> String {
    match error.downcast_ref::<zoho_auth::Error>() {
        Some(error) => predicates(error),
        None => format!("not a zoho_auth::Error: {error}"),
    }
}

fn tower_body(sent: Sent) -> BoxBody<Bytes, BoxError> {
    match sent {
        Sent::Empty => Empty::new().map_err(Into::into).boxed(),
        Sent::Bytes(data) | Sent::Sized(data) => Full::new(Bytes::from_static(data))
            .map_err(Into::into)
            .boxed(),
        Sent::Stream(data) => Unsized(Some(Bytes::from_static(data)))
            .map_err(Into::into)
            .boxed(),
    }
}

fn reqwest_body(sent: Sent) -> reqwest::Body {
    match sent {
        Sent::Empty => reqwest::Body::from(Bytes::new()),
        Sent::Bytes(data) => reqwest::Body::from(Bytes::from_static(data)),
        Sent::Sized(data) => reqwest::Body::wrap(Full::new(Bytes::from_static(data))),
        Sent::Stream(data) => reqwest::Body::wrap(Unsized(Some(Bytes::from_static(data)))),
    }
}

type TowerClient = Client<HttpConnector, RequestBody<BoxBody<Bytes, BoxError>>>;

/// A front end over `layer`, sending below it through a recorder.
enum Built {
    Tower(zoho_auth::ZohoAuth<Recording<TowerClient>>),
    Reqwest(ZohoReqwest<Recording<reqwest::Client>>, reqwest::Client),
    Middleware(reqwest_middleware::ClientWithMiddleware),
}

fn build(front: Front, layer: &ZohoAuthLayer, seen: &Seen) -> Built {
    let http = zoho_auth::accounts::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    match front {
        Front::Tower => Built::Tower(layer.layer(Recording {
            inner: Client::builder(TokioExecutor::new()).build_http(),
            seen: seen.clone(),
        })),
        Front::Reqwest => Built::Reqwest(
            ZohoReqwest::new(
                Recording {
                    inner: http.clone(),
                    seen: seen.clone(),
                },
                layer,
            ),
            http,
        ),
        Front::Middleware => Built::Middleware(
            reqwest_middleware::ClientBuilder::new(http)
                .with(ZohoAuthMiddleware::new(layer))
                .with(RecordingMiddleware(seen.clone()))
                .build(),
        ),
    }
}

async fn text(body: impl Body<Data = Bytes, Error = impl Into<BoxError>>) -> String {
    let bytes = body.collect().await.map_err(Into::into).unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Built {
    async fn send(&self, call: &Call) -> Answer {
        match self {
            Built::Tower(service) => {
                let mut request = Request::builder()
                    .method(call.method.clone())
                    .uri(&call.url)
                    .body(tower_body(call.body))
                    .unwrap();
                if let Some(id) = &call.connection {
                    request.extensions_mut().insert(id.clone());
                }
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let withheld = response.extensions().get::<TokenWithheld>().is_some();
                        Ok((status, text(response.into_body()).await, withheld))
                    }
                    Err(error) => Err(zoho_error(&*error)),
                }
            }
            Built::Reqwest(service, http) => {
                let service = match &call.connection {
                    Some(id) => service.for_connection(id.clone()),
                    None => service.clone(),
                };
                let request = http
                    .request(call.method.clone(), &call.url)
                    .body(reqwest_body(call.body))
                    .build()
                    .unwrap();
                match service.oneshot(request).await {
                    Ok(response) => {
                        assert_eq!(response.url().as_str(), call.url, "Response::url kept");
                        let status = response.status().as_u16();
                        let withheld = response.extensions().get::<TokenWithheld>().is_some();
                        Ok((status, response.text().await.unwrap(), withheld))
                    }
                    Err(error) => Err(zoho_error(&*error)),
                }
            }
            Built::Middleware(client) => {
                let mut request = client
                    .request(call.method.clone(), &call.url)
                    .body(reqwest_body(call.body));
                if let Some(id) = &call.connection {
                    request = request.with_extension(id.clone());
                }
                match request.send().await {
                    Ok(response) => {
                        assert_eq!(response.url().as_str(), call.url, "Response::url kept");
                        let status = response.status().as_u16();
                        let withheld = response.extensions().get::<TokenWithheld>().is_some();
                        Ok((status, response.text().await.unwrap(), withheld))
                    }
                    Err(reqwest_middleware::Error::Middleware(error)) => {
                        Err(match error.downcast_ref::<zoho_auth::Error>() {
                            Some(error) => predicates(error),
                            None => format!("not a zoho_auth::Error: {error}"),
                        })
                    }
                    Err(reqwest_middleware::Error::Reqwest(error)) => {
                        Err(format!("reqwest: {error}"))
                    }
                }
            }
        }
    }
}

/// A row's outcome: each request's answer, and the tokens the requests sent below the front end
/// carried, named in order of appearance (`t1`, `t2`, ...; `-` for none), so that columns with
/// different simulators compare.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    answers: Vec<Answer>,
    carried: Vec<String>,
}

fn carried(seen: &Seen) -> Vec<String> {
    let mut names: HashMap<HeaderValue, String> = HashMap::new();
    seen.lock()
        .unwrap()
        .iter()
        .map(|header| match header {
            None => "-".to_owned(),
            Some(header) => {
                let next = format!("t{}", names.len() + 1);
                names.entry(header.clone()).or_insert(next).clone()
            }
        })
        .collect()
}

/// What a row sets up on its simulator before its requests, and how its layer is built.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// One account; its first token minted, then every token killed at Zoho.
    DeadToken,
    /// One account with a live token.
    LiveToken,
    /// Two connections, alice's and bob's, both with a live token.
    Connections,
}

struct Row {
    name: &'static str,
    setup: Setup,
    /// The requests, given the simulator's URL.
    calls: fn(&str) -> Vec<Call>,
    /// What the row must come to, in every column.
    expect: fn() -> Outcome,
}

fn call(method: Method, url: String, body: Sent) -> Call {
    Call {
        method,
        url,
        body,
        connection: None,
    }
}

fn for_connection(mut call: Call, id: &str) -> Call {
    call.connection = Some(id.parse().unwrap());
    call
}

fn ok(body: &str) -> Answer {
    Ok((200, body.to_owned(), false))
}

fn echo(method: &str, path: &str, body: &[u8]) -> String {
    format!(
        r#"{{"body_bytes":{},"body_sha":"{}","method":"{method}","path":"{path}","product":"crm"}}"#,
        body.len(),
        zoho_auth::sim::body_sha(body)
    )
}

const LEAD: &[u8] = br#"{"data":[{"Last_Name":"Parity"}]}"#;

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "a dead token is refreshed and the GET resent once",
            setup: Setup::DeadToken,
            calls: |url| vec![call(Method::GET, format!("{url}/crm/v8/Leads"), Sent::Empty)],
            expect: || Outcome {
                answers: vec![ok(&echo("GET", "/crm/v8/Leads", b""))],
                carried: vec!["t1".into(), "t2".into()],
            },
        },
        Row {
            name: "a POST with its body in memory is resent with it",
            setup: Setup::DeadToken,
            calls: |url| {
                vec![call(
                    Method::POST,
                    format!("{url}/crm/v8/Leads"),
                    Sent::Bytes(LEAD),
                )]
            },
            expect: || Outcome {
                answers: vec![ok(&echo("POST", "/crm/v8/Leads", LEAD))],
                carried: vec!["t1".into(), "t2".into()],
            },
        },
        Row {
            name: "a stream of known size within the replay limit is buffered and resent",
            setup: Setup::DeadToken,
            calls: |url| {
                vec![call(
                    Method::POST,
                    format!("{url}/crm/v8/Leads"),
                    Sent::Sized(LEAD),
                )]
            },
            expect: || Outcome {
                answers: vec![ok(&echo("POST", "/crm/v8/Leads", LEAD))],
                carried: vec!["t1".into(), "t2".into()],
            },
        },
        Row {
            name: "a stream of unknown size gets Zoho's answer unchanged, and the next request a fresh token",
            setup: Setup::DeadToken,
            calls: |url| {
                vec![
                    call(
                        Method::POST,
                        format!("{url}/crm/v8/Leads"),
                        Sent::Stream(LEAD),
                    ),
                    call(Method::GET, format!("{url}/crm/v8/Leads"), Sent::Empty),
                ]
            },
            expect: || Outcome {
                answers: vec![
                    Err("401".into()),
                    ok(&echo("GET", "/crm/v8/Leads", b"")),
                ],
                carried: vec!["t1".into(), "t2".into()],
            },
        },
        Row {
            name: "no token to the same host under another name, and the 401 says why",
            setup: Setup::LiveToken,
            calls: |url| {
                vec![call(
                    Method::GET,
                    format!("{}/crm/v8/Leads", url.replace("127.0.0.1", "localhost")),
                    Sent::Empty,
                )]
            },
            expect: || Outcome {
                answers: vec![Err("401 withheld".into())],
                carried: vec!["-".into()],
            },
        },
        Row {
            name: "plain http to a Zoho host is refused before anything is sent",
            setup: Setup::LiveToken,
            calls: |_| {
                vec![call(
                    Method::GET,
                    "http://www.zohoapis.com/crm/v8/Leads".into(),
                    Sent::Empty,
                )]
            },
            expect: || Outcome {
                answers: vec![Err("permanent+insecure+config".into())],
                carried: vec![],
            },
        },
        Row {
            name: "each request carries its own connection's token; one naming none fails first",
            setup: Setup::Connections,
            calls: |url| {
                let leads = format!("{url}/crm/v8/Leads");
                vec![
                    for_connection(call(Method::GET, leads.clone(), Sent::Empty), "alice"),
                    for_connection(call(Method::GET, leads.clone(), Sent::Empty), "bob"),
                    for_connection(call(Method::GET, leads.clone(), Sent::Empty), "alice"),
                    call(Method::GET, leads, Sent::Empty),
                ]
            },
            expect: || Outcome {
                answers: vec![
                    ok(&echo("GET", "/crm/v8/Leads", b"")),
                    ok(&echo("GET", "/crm/v8/Leads", b"")),
                    ok(&echo("GET", "/crm/v8/Leads", b"")),
                    Err("not_connected".into()),
                ],
                carried: vec!["t1".into(), "t2".into(), "t1".into()],
            },
        },
    ]
}

/// A status other than 200 as the table writes it: `401`, and ` withheld` when a
/// `TokenWithheld` came with it.
fn normalise(answer: Answer) -> Answer {
    match answer {
        Ok((200, body, false)) => Ok((200, body, false)),
        Ok((status, _, withheld)) => Err(format!(
            "{status}{}",
            if withheld { " withheld" } else { "" }
        )),
        error => error,
    }
}

async fn run(row: &Row, front: Front) -> Outcome {
    let zoho = Simulator::start().await.unwrap();
    let layer = match row.setup {
        Setup::DeadToken | Setup::LiveToken => {
            let cache = zoho.token_cache().unwrap();
            cache.token().await.unwrap();
            if matches!(row.setup, Setup::DeadToken) {
                zoho.invalidate_all_tokens();
            }
            // A Zoho host the token may go to, for the plain-http row.
            ZohoAuthLayer::new(cache)
                .allow_host("www.zohoapis.com")
                .unwrap()
        }
        Setup::Connections => {
            let store: Arc<dyn ConnectionStore> = Arc::new(MemoryConnections::new());
            for name in ["alice", "bob"] {
                let refresh = zoho.mint_refresh_token(&[]);
                store
                    .connection(&name.parse().unwrap())
                    .update(None, |set| {
                        set.refresh_token = Some(refresh.clone());
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            let connections = Connections::builder(zoho.accounts_client().unwrap(), store)
                .build()
                .unwrap();
            ZohoAuthLayer::connections(connections)
        }
    };
    let seen = Seen::default();
    let built = build(front, &layer, &seen);
    let mut answers = Vec::new();
    for call in (row.calls)(&zoho.url()) {
        answers.push(normalise(built.send(&call).await));
    }
    Outcome {
        answers,
        carried: carried(&seen),
    }
}

#[tokio::test]
async fn every_front_end_does_what_the_layer_does() {
    let mut table = String::from("| row | tower | reqwest `Service` | reqwest-middleware |\n|---|---|---|---|\n");
    let mut failures = Vec::new();
    for row in rows() {
        let mut outcomes = Vec::new();
        for front in FRONTS {
            outcomes.push(run(&row, front).await);
        }
        let expected = (row.expect)();
        let cells: Vec<String> = outcomes
            .iter()
            .map(|outcome| {
                if *outcome == expected {
                    "as expected".to_owned()
                } else {
                    format!("{outcome:?}")
                }
            })
            .collect();
        table.push_str(&format!("| {} | {} |\n", row.name, cells.join(" | ")));
        for (front, outcome) in FRONTS.iter().zip(&outcomes) {
            if *outcome != expected {
                failures.push(format!(
                    "{}: {front:?}\n  got      {outcome:?}\n  expected {expected:?}",
                    row.name
                ));
            }
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
