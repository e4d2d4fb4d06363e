//! Property tests (proptest) for everything that reads input from the outside world: the token
//! endpoint's answers, product APIs' error bodies, the consent callback and data-centre names.
//! Each never panics on arbitrary input and round-trips what it should.

use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use zoho_auth::accounts::TokenResponse;
use zoho_auth::authorize::Callback;
use zoho_auth::classify::Classifier;
use zoho_auth::DataCenter;

const DAY: Duration = Duration::from_secs(86_400);

/// Any status `http` accepts (100–999).
fn status() -> impl Strategy<Value = StatusCode> {
    (100u16..=999).prop_map(|code| StatusCode::from_u16(code).unwrap())
}

/// A non-empty string without leading or trailing whitespace (the parsers trim).
fn trimmed_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{1,{max}}}"))
        .unwrap()
        .prop_filter("no surrounding whitespace", |s| {
            !s.is_empty() && s.trim() == s
        })
}

/// Arbitrary JSON, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        ".{0,12}".prop_map(Value::from),
        // Numbers hidden in strings, as some proxies send them, including unparseable ones.
        prop_oneof![
            Just("NaN".to_owned()),
            Just("inf".to_owned()),
            Just("-1".to_owned()),
            Just("1e400".to_owned()),
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i64>().prop_map(|i| format!(" {i} ")),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are mostly the ones the token endpoint's reader looks at.
fn token_answer_like() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("access_token".to_owned()),
        Just("refresh_token".to_owned()),
        Just("expires_in".to_owned()),
        Just("expires_in_sec".to_owned()),
        Just("api_domain".to_owned()),
        Just("scope".to_owned()),
        Just("token_type".to_owned()),
        Just("error".to_owned()),
        Just("error_description".to_owned()),
        Just("status".to_owned()),
        ".{0,8}",
    ];
    prop::collection::vec((key, json_value()), 0..8).prop_map(|pairs| {
        let object: Map<String, Value> = pairs.into_iter().collect();
        Value::Object(object).to_string().into_bytes()
    })
}

/// What a Zoho product says about a dead token: the statuses it comes with and the body, given
/// the code (the real one, or a near miss) and a free-text message.
struct Dialect {
    name: &'static str,
    statuses: &'static [u16],
    /// The 2xx-with-error form that counts only on the product's own hosts (People).
    host_only: Option<(u16, &'static str)>,
    code: fn() -> Value,
    body: fn(Value, &str) -> Value,
}

const DIALECTS: &[Dialect] = &[
    Dialect {
        name: "CRM INVALID_TOKEN",
        statuses: &[401],
        host_only: None,
        code: || json!("INVALID_TOKEN"),
        body: |code, message| json!({"code": code, "details": {}, "message": message, "status": "error"}),
    },
    Dialect {
        name: "CRM AUTHENTICATION_FAILURE",
        statuses: &[401],
        host_only: None,
        code: || json!("AUTHENTICATION_FAILURE"),
        body: |code, message| json!({"code": code, "details": {}, "message": message, "status": "error"}),
    },
    Dialect {
        name: "Desk",
        statuses: &[401],
        host_only: None,
        code: || json!("INVALID_OAUTH"),
        body: |code, message| json!({"errorCode": code, "message": message}),
    },
    Dialect {
        name: "Books",
        statuses: &[401],
        host_only: None,
        code: || json!(57),
        body: |code, message| json!({"code": code, "message": message}),
    },
    Dialect {
        name: "Mail",
        statuses: &[401],
        host_only: None,
        code: || json!("INVALID_OAUTHTOKEN"),
        body: |code, message| json!({"data": {"errorCode": code}, "status": {"code": 401, "description": message}}),
    },
    Dialect {
        name: "Projects",
        statuses: &[401],
        host_only: None,
        code: || json!("INVALID_OAUTHTOKEN"),
        body: |code, message| json!({"error": {"status_code": "401", "title": code, "message": message}}),
    },
    Dialect {
        name: "Accounts user info",
        statuses: &[401],
        host_only: None,
        code: || json!("INVALID_OAUTHTOKEN"),
        body: |code, message| json!({"response": "error", "cause": code, "message": message}),
    },
    Dialect {
        name: "People",
        statuses: &[401],
        host_only: Some((200, "people.")),
        code: || json!(7213),
        body: |code, message| json!({"response": {"errors": {"code": code, "message": message}, "status": 1}}),
    },
    Dialect {
        name: "WorkDrive",
        statuses: &[401, 500],
        host_only: None,
        code: || json!("F7003"),
        body: |code, message| json!({"errors": [{"id": code, "title": message}]}),
    },
];

/// Every value some rule accepts, in its decimal/string form: a near miss must be none of them.
const DEAD_CODES: &[&str] = &[
    "INVALID_TOKEN",
    "AUTHENTICATION_FAILURE",
    "INVALID_OAUTH",
    "57",
    "INVALID_OAUTHTOKEN",
    "7213",
    "F7003",
];

/// Codes that look like a dead token but are not one a refresh cures, or are not codes at all.
fn near_miss_code() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("OAUTH_SCOPE_MISMATCH")),
        Just(json!("SCOPE_MISMATCH")),
        Just(json!("OAUTH_ORG_MISMATCH")),
        Just(json!("INVALID_TICKET")),
        Just(json!("UNAUTHORIZED")),
        Just(json!(7218)),
        Just(json!(7202)),
        Just(json!("F7004")),
        Just(json!(14)),
        Just(json!("invalid_token")),
        Just(json!("INVALID_TOKEN ")),
        Just(json!(570)),
        Just(json!(57.5)),
        Just(json!(null)),
        Just(json!([])),
        ".{0,16}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
    .prop_filter("not a dead-token code", |code| {
        let text = match code {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        !DEAD_CODES.contains(&text.as_str())
    })
}

fn host() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("www.zohoapis.com".to_owned())),
        Just(Some("people.zoho.com".to_owned())),
        Just(Some("PEOPLE.zoho.eu".to_owned())),
        Just(Some("desk.zoho.in".to_owned())),
        "[a-zA-Z0-9.-]{0,24}".prop_map(Some),
        ".{0,24}".prop_map(Some),
    ]
}

/// `s` with each ASCII letter's case picked by `mask`.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if (mask >> (i % 64)) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn accounts_host(dc: DataCenter) -> &'static str {
    dc.accounts_url().trim_start_matches("https://")
}

/// The data centre whose accounts host this is exactly (ignoring ASCII case), if any.
fn dc_with_accounts_host(host: &str) -> Option<DataCenter> {
    DataCenter::ALL
        .into_iter()
        .find(|dc| accounts_host(*dc).eq_ignore_ascii_case(host))
}

fn data_center() -> impl Strategy<Value = DataCenter> {
    prop::sample::select(DataCenter::ALL.to_vec())
}

/// A label fragment for look-alike hosts: letters, digits, dots and hyphens.
fn host_fragment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.-]{0,10}"
}

proptest! {
    // ---------------------------------------------------------------------------------------
    // TokenResponse::from_http
    // ---------------------------------------------------------------------------------------

    /// Arbitrary bytes under any status: no panic, and a success always has a usable lifetime of
    /// at most a day.
    #[test]
    fn token_answers_never_panic_on_arbitrary_bytes(status in status(), body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(answer) = TokenResponse::from_http(status, &body) {
            prop_assert!(answer.expires_in >= Duration::from_secs(1) && answer.expires_in <= DAY);
        }
    }

    /// JSON objects made of the fields the reader looks at, with values of every JSON type: no
    /// panic; a success has a non-empty token and a lifetime within (0, 1 day]; a 5xx or a body
    /// without an access token is never a success.
    #[test]
    fn token_answers_never_panic_on_json_of_any_shape(status in status(), body in token_answer_like()) {
        let parsed: Map<String, Value> = serde_json::from_slice(&body).unwrap();
        match TokenResponse::from_http(status, &body) {
            Ok(answer) => {
                prop_assert!(!status.is_server_error(), "a {status} is never a success");
                prop_assert!(!answer.access_token.expose().trim().is_empty());
                prop_assert_eq!(
                    parsed.get("access_token").and_then(Value::as_str).map(str::trim),
                    Some(answer.access_token.expose())
                );
                prop_assert!(answer.expires_in >= Duration::from_secs(1), "{:?}", answer.expires_in);
                prop_assert!(answer.expires_in <= DAY, "{:?} is over a day", answer.expires_in);
            }
            Err(error) => {
                // Every failure is classified as something a caller can act on.
                let kinds = [
                    error.is_transient(),
                    error.is_permanent(),
                    error.is_throttled(),
                    error.zoho_code().is_some(),
                ];
                prop_assert!(kinds.contains(&true), "{error:?}");
            }
        }
    }

    /// Generated successes in today's shape (`expires_in` seconds), the legacy shape
    /// (`expires_in_sec` + `expires_in` in ms) and the bare-milliseconds shape come back field by
    /// field, with a lifetime in seconds that never exceeds a day.
    #[test]
    fn token_answers_round_trip(
        access_token in trimmed_text(40),
        refresh_token in proptest::option::of("1000\\.[0-9a-f]{8,32}\\.[0-9a-f]{8,32}"),
        lifetime in prop_oneof![
            // (how Zoho states it, the lifetime the reader must get)
            (1u64..=86_400).prop_map(|s| (json!({"expires_in": s}), s)),
            (1u64..=86_400).prop_map(|s| (json!({"expires_in": s.to_string()}), s)),
            (1u64..=86_400).prop_map(|s| (json!({"expires_in_sec": s, "expires_in": s * 1000}), s)),
            // Milliseconds without `expires_in_sec`: anything above a day in seconds.
            (86_401u64..=86_400_000).prop_map(|ms| (json!({"expires_in": ms}), ms / 1000)),
            // A lifetime beyond a day is capped at a day.
            (86_401u64..=10_000_000).prop_map(|s| (json!({"expires_in_sec": s, "expires_in": s * 1000}), 86_400)),
        ],
        scopes in prop::collection::vec("[A-Za-z]{1,10}\\.[A-Za-z]{1,10}\\.(ALL|READ|CREATE|all)", 0..5),
        api_domain in proptest::option::of(prop_oneof![
            data_center().prop_map(|dc| dc.api_domain(zoho_auth::Environment::Production).to_owned()),
            trimmed_text(30),
        ]),
        token_type in proptest::option::of(Just("Bearer".to_owned())),
        status in prop::sample::select(vec![200u16, 201, 400, 401]),
    ) {
        let (expires, seconds) = lifetime;
        let mut body = expires.as_object().unwrap().clone();
        body.insert("access_token".into(), access_token.clone().into());
        if let Some(refresh) = &refresh_token {
            body.insert("refresh_token".into(), refresh.clone().into());
        }
        if !scopes.is_empty() {
            body.insert("scope".into(), scopes.join(" ").into());
        }
        if let Some(domain) = &api_domain {
            body.insert("api_domain".into(), domain.clone().into());
        }
        if let Some(kind) = &token_type {
            body.insert("token_type".into(), kind.clone().into());
        }
        let bytes = Value::Object(body).to_string();
        let status = StatusCode::from_u16(status).unwrap();
        let answer = TokenResponse::from_http(status, bytes.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?} for {bytes}")))?;
        prop_assert_eq!(answer.access_token.expose(), access_token.as_str());
        prop_assert_eq!(answer.refresh_token.as_ref().map(|t| t.expose().to_owned()), refresh_token);
        prop_assert_eq!(answer.expires_in, Duration::from_secs(seconds), "{}", bytes);
        prop_assert!(answer.expires_in <= DAY);
        prop_assert_eq!(answer.scopes, scopes);
        prop_assert_eq!(answer.api_domain, api_domain);
        prop_assert_eq!(answer.token_type, token_type);
    }

    // ---------------------------------------------------------------------------------------
    // Classifier::zoho().is_token_error
    // ---------------------------------------------------------------------------------------

    #[test]
    fn the_classifier_never_panics_on_arbitrary_input(
        status in status(),
        host in host(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| v.to_string().into_bytes()),
        ],
    ) {
        let _ = Classifier::zoho().is_token_error(status, host.as_deref(), &body);
    }

    /// A generated dead-token body in a product's dialect — its code among arbitrary messages and
    /// unrelated fields — is a token error exactly when the status is one the product uses for
    /// it (People's 200 only on `people.` hosts); a near-miss code (scope or org mismatch,
    /// another code, a wrong type) is never one.
    #[test]
    fn the_classifier_is_true_exactly_for_dead_token_dialects(
        dialect in 0..DIALECTS.len(),
        real_code in any::<bool>(),
        near_miss in near_miss_code(),
        message in ".{0,40}",
        extra in prop::collection::btree_map("[a-z_]{1,10}", json_value(), 0..3),
        status in prop_oneof![
            prop::sample::select(vec![200u16, 401, 500]),
            100u16..=599,
        ],
        host in host(),
    ) {
        let dialect = &DIALECTS[dialect];
        let code = if real_code { (dialect.code)() } else { near_miss };
        let mut body = (dialect.body)(code, &message);
        let object = body.as_object_mut().unwrap();
        for (key, value) in extra {
            // Unrelated fields only: never one a rule reads.
            if !["code", "errorCode", "data", "error", "cause", "response", "errors"].contains(&key.as_str()) {
                object.entry(key).or_insert(value);
            }
        }
        let status_code = StatusCode::from_u16(status).unwrap();
        let on_its_host = dialect.host_only.is_some_and(|(only_status, prefix)| {
            status == only_status
                && host.as_deref().is_some_and(|h| {
                    h.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix))
                })
        });
        let expected = real_code && (dialect.statuses.contains(&status) || on_its_host);
        let bytes = body.to_string();
        prop_assert_eq!(
            Classifier::zoho().is_token_error(status_code, host.as_deref(), bytes.as_bytes()),
            expected,
            "{} at {} for {:?}: {}", dialect.name, status, host, bytes
        );
    }

    /// The documented "not fixed by a refresh" answers are never token errors, whatever their
    /// message, status or host.
    #[test]
    fn scope_and_org_mismatches_are_never_token_errors(
        which in 0..5usize,
        message in ".{0,40}",
        status in prop_oneof![Just(401u16), Just(200u16), Just(500u16), 100u16..=599],
        host in host(),
    ) {
        let body = match which {
            0 => json!({"code": "OAUTH_SCOPE_MISMATCH", "details": {}, "message": message, "status": "error"}),
            1 => json!({"errorCode": "SCOPE_MISMATCH", "message": message}),
            2 => json!({"errorCode": "OAUTH_ORG_MISMATCH", "message": message}),
            3 => json!({"response": {"errors": {"code": 7218, "message": message}, "status": 1}}),
            _ => json!({"errors": [{"id": "F7004", "title": message}]}),
        };
        let status = StatusCode::from_u16(status).unwrap();
        prop_assert!(!Classifier::zoho().is_token_error(status, host.as_deref(), body.to_string().as_bytes()));
    }

    // ---------------------------------------------------------------------------------------
    // Callback::parse
    // ---------------------------------------------------------------------------------------

    #[test]
    fn callback_parsing_never_panics(query in prop_oneof![
        ".{0,200}",
        "[?&=%+a-z0-9-]{0,80}",
        prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        let _ = Callback::parse(&query);
    }

    /// A callback whose parameters hold arbitrary Unicode, URL-encoded as a browser sends them,
    /// in any order, among unknown parameters, with or without the leading `?`, comes back
    /// exactly.
    #[test]
    fn callbacks_round_trip_through_url_encoding(
        code in proptest::option::of(".{1,40}"),
        state in proptest::option::of(".{1,40}"),
        location in proptest::option::of(prop_oneof![
            data_center().prop_map(|dc| dc.location().to_owned()),
            ".{1,10}",
        ]),
        accounts_server in proptest::option::of(prop_oneof![
            data_center().prop_map(|dc| dc.accounts_url().to_owned()),
            ".{1,40}",
        ]),
        error in proptest::option::of(prop_oneof![Just("access_denied".to_owned()), ".{1,20}"]),
        unknown in prop::collection::vec(("[a-z_]{1,12}", ".{0,20}"), 0..3),
        order in any::<u64>(),
        question_mark in any::<bool>(),
    ) {
        let mut pairs: Vec<(String, String)> = unknown
            .into_iter()
            .filter(|(key, _)| !["code", "state", "location", "accounts-server", "error"].contains(&key.as_str()))
            .collect();
        for (key, value) in [
            ("code", &code),
            ("state", &state),
            ("location", &location),
            ("accounts-server", &accounts_server),
            ("error", &error),
        ] {
            if let Some(value) = value {
                pairs.push((key.to_owned(), value.clone()));
            }
        }
        // A deterministic shuffle from the generated seed.
        let mut seed = order | 1;
        for i in (1..pairs.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            pairs.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let query = if question_mark { format!("?{encoded}") } else { encoded };
        let callback = Callback::parse(&query);
        prop_assert_eq!(callback.code.as_ref().map(|c| c.expose().to_owned()), code, "{}", query);
        prop_assert_eq!(callback.state, state);
        prop_assert_eq!(callback.location, location);
        prop_assert_eq!(callback.accounts_server, accounts_server);
        prop_assert_eq!(callback.error, error);
    }

    // ---------------------------------------------------------------------------------------
    // DataCenter::from_location, from_accounts_url, FromStr
    // ---------------------------------------------------------------------------------------

    #[test]
    fn data_centre_parsing_never_panics(input in prop_oneof![
        ".{0,60}",
        "https?://[a-zA-Z0-9.:@/?#%-]{0,40}",
        prop::collection::vec(any::<u8>(), 0..60).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        let by_location = DataCenter::from_location(&input);
        let by_url = DataCenter::from_accounts_url(&input);
        let parsed = input.parse::<DataCenter>();
        // `FromStr` accepts exactly what one of the two accepts.
        prop_assert_eq!(parsed.ok(), by_location.or(by_url));
        if let Some(dc) = by_location {
            prop_assert!(input.trim().eq_ignore_ascii_case(dc.location()));
        }
    }

    /// Every DC comes back from its location (any case, surrounding whitespace), its accounts URL
    /// (any case, trailing slash, explicit :443) and its `Display` form.
    #[test]
    fn every_data_centre_round_trips(
        dc in data_center(),
        case in any::<u64>(),
        padding in ("[ \t\n]{0,3}", "[ \t\n]{0,3}"),
        tail in prop::sample::select(vec!["", "/", ":443", ":443/", "/oauth/v2/token"]),
    ) {
        let location = format!("{}{}{}", padding.0, recase(dc.location(), case), padding.1);
        prop_assert_eq!(DataCenter::from_location(&location), Some(dc));
        prop_assert_eq!(location.parse::<DataCenter>().ok(), Some(dc));
        prop_assert_eq!(dc.to_string().parse::<DataCenter>().ok(), Some(dc));

        let url = format!("https://{}{tail}", recase(accounts_host(dc), case));
        prop_assert_eq!(DataCenter::from_accounts_url(&url), Some(dc), "{}", url);
        prop_assert_eq!(url.parse::<DataCenter>().ok(), Some(dc), "{}", url);
    }

    /// Hosts built around a real accounts host — random prefixes and suffixes — are rejected
    /// unless they happen to be another DC's exact accounts host (`accounts.zoho.com` + `.au`);
    /// so are other schemes, other ports, and URLs that only mention the real host outside the
    /// host part.
    #[test]
    fn look_alike_accounts_hosts_are_rejected(
        dc in data_center(),
        prefix in host_fragment(),
        suffix in host_fragment(),
        evil in "[a-z]{1,10}\\.(test|com|eu|example)",
        port in 1u16..=65535,
        scheme in prop::sample::select(vec!["http", "ftp", "wss", "HTTP"]),
    ) {
        let real = accounts_host(dc);
        if !prefix.is_empty() || !suffix.is_empty() {
            let host = format!("{prefix}{real}{suffix}");
            let url = format!("https://{host}");
            prop_assert_eq!(DataCenter::from_accounts_url(&url), dc_with_accounts_host(&host), "{}", url);
            prop_assert_eq!(url.parse::<DataCenter>().ok(), dc_with_accounts_host(&host), "{}", url);
            // The same look-alike as a location.
            let location = format!("{prefix}{}{suffix}", dc.location());
            let expected = DataCenter::ALL
                .into_iter()
                .find(|d| d.location().eq_ignore_ascii_case(location.trim()));
            prop_assert_eq!(DataCenter::from_location(&location), expected);
        }
        for url in [
            format!("https://{real}.{evil}"),
            format!("https://{real}@{evil}"),
            format!("https://{real}%40{evil}"),
            format!("https://{evil}/{real}"),
            format!("https://{evil}?{real}"),
            format!("https://{evil}#{real}"),
            format!("https://{evil}\\{real}"),
            format!("{scheme}://{real}"),
            format!("//{real}"),
            real.to_owned(),
        ] {
            prop_assert_eq!(DataCenter::from_accounts_url(&url), None, "{}", url);
            prop_assert!(url.parse::<DataCenter>().is_err(), "{}", url);
        }
        if port != 443 {
            let url = format!("https://{real}:{port}");
            prop_assert_eq!(DataCenter::from_accounts_url(&url), None, "{}", url);
        }
    }
}
