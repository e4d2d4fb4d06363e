//! Every front end of the layer behaves the same (issue 12): one table of requests — dead tokens,
//! replays, bodies that can and cannot be sent again, the host policy, connections — each run
//! through the tower layer over hyper-util, `ZohoReqwest` over `reqwest::Client`, and
//! `ZohoAuthMiddleware` in a `reqwest_middleware` chain, each against a simulator of its own. A
//! row's outcome (the answer, and which token each request sent below the front end carried) must
//! be the same in every column, and the one the row expects.

#[path = "common/front.rs"]
mod front;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use tower::ServiceExt;
use zoho_auth::reqwest::{ZohoAuthMiddleware, ZohoReqwest};
use zoho_auth::sim::Simulator;
use zoho_auth::store::{ConnectionStore, MemoryConnections};
use zoho_auth::{Connections, ZohoAuthLayer};

use front::{build, described, Answer, Call, Front, Seen, Sent, FRONTS};

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
            name: "a URL for the account's api_domain goes to the token's, and is resent there",
            setup: Setup::DeadToken,
            calls: |_| {
                vec![call(
                    Method::GET,
                    format!("{}/crm/v8/Leads", zoho_auth::reqwest::API_DOMAIN),
                    Sent::Empty,
                )]
            },
            expect: || Outcome {
                answers: vec![ok(&echo("GET", "/crm/v8/Leads", b""))],
                carried: vec!["t1".into(), "t2".into()],
            },
        },
        Row {
            name: "each request carries its own connection's token; one naming none fails first",
            setup: Setup::Connections,
            calls: |_| {
                // Each connection's own api_domain: a simulator's is the simulator.
                let leads = format!("{}/crm/v8/Leads", zoho_auth::reqwest::API_DOMAIN);
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
        answers.push(normalise(
            built
                .request(&call)
                .await
                .map_err(|error| described(&error)),
        ));
    }
    Outcome {
        answers,
        carried: carried(&seen),
    }
}

#[tokio::test]
async fn every_front_end_does_what_the_layer_does() {
    let mut table = String::from(
        "| row | tower | reqwest `Service` | reqwest-middleware |\n|---|---|---|---|\n",
    );
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

/// reqwest keeps a request's timeout beside the request, where `http` has no place for it; both
/// reqwest front ends must still honour it.
#[tokio::test]
async fn a_timeout_set_on_a_reqwest_request_holds_through_both_reqwest_front_ends() {
    // Zoho takes a minute to answer; the request allows a fifth of a second.
    let zoho = Simulator::builder()
        .api_latency(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let layer = ZohoAuthLayer::new(zoho.token_cache().unwrap());
    let http = zoho_auth::accounts::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let url = format!("{}/crm/v8/Leads", zoho.url());
    let timeout = Duration::from_millis(200);

    let request = http.get(&url).timeout(timeout).build().unwrap();
    let error = ZohoReqwest::new(http.clone(), &layer)
        .oneshot(request)
        .await
        .unwrap_err();
    assert!(
        error
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout),
        "ZohoReqwest: {error}"
    );

    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(ZohoAuthMiddleware::new(&layer))
        .build();
    let error = client.get(&url).timeout(timeout).send().await.unwrap_err();
    assert!(error.is_timeout(), "ZohoAuthMiddleware: {error}");
}
