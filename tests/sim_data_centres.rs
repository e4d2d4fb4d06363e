//! The simulator's data centres: each has its own users, accounts server and API host, and
//! knows nothing of the others' tokens, as Zoho's DCs do (zoho-wire.md §5–§7).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};
use zoho_auth::accounts::AccountsClient;
use zoho_auth::sim::{Counters, Simulator, UnknownDataCenter, UserCounters};
use zoho_auth::{Accounts, RefreshToken};

use common::{Reply, Zoho};

const CALLBACK: &str = "https://app.example/callback";
const INVALID_TOKEN: &str =
    r#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#;

async fn start(data_centers: usize) -> Zoho {
    Zoho::with(
        Simulator::builder()
            .data_centers(data_centers)
            .redirect_uri(CALLBACK),
    )
    .await
}

impl Zoho {
    fn dc(&self, dc: usize) -> String {
        self.sim.data_center_url(dc).unwrap()
    }

    /// `POST /oauth/v2/token` at data centre `dc`, with the client's credentials and `extra`.
    async fn token_at(&self, dc: usize, extra: &[(&str, &str)]) -> Reply {
        let response = self
            .http
            .post(format!("{}/oauth/v2/token", self.dc(dc)))
            .form(&self.params(extra))
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    async fn refresh_at(&self, dc: usize, refresh: &RefreshToken) -> Reply {
        let extra = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.expose()),
        ];
        self.token_at(dc, &extra).await
    }

    async fn exchange_at(&self, dc: usize, code: &str, redirect_uri: Option<&str>) -> Reply {
        let mut extra = vec![("grant_type", "authorization_code"), ("code", code)];
        extra.extend(redirect_uri.map(|uri| ("redirect_uri", uri)));
        self.token_at(dc, &extra).await
    }

    /// `GET {dc}/crm/v8/Leads` with `token`.
    async fn crm_at(&self, dc: usize, token: &str) -> Reply {
        let response = self
            .http
            .get(format!("{}/crm/v8/Leads", self.dc(dc)))
            .header("Authorization", format!("Zoho-oauthtoken {token}"))
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    fn user(&self, refresh: &RefreshToken) -> UserCounters {
        self.sim
            .counters_for(refresh)
            .expect("a token of this simulator")
    }

    /// DC 0's consent page for [`Zoho::authorize_url`].
    async fn consent_page(&self) -> Reply {
        Reply::read(self.http.get(self.authorize_url()).send().await.unwrap()).await
    }

    /// Answers consent page `request_id` at DC 0 with `decision` and, if given, the `dc` field.
    async fn decide(&self, request_id: &str, decision: &str, dc: Option<&str>) -> Reply {
        let mut form = vec![("request_id", request_id), ("decision", decision)];
        form.extend(dc.map(|dc| ("dc", dc)));
        let response = self
            .http
            .post(format!("{}/oauth/v2/auth/decision", self.dc(0)))
            .form(&form)
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    fn authorize_url(&self) -> String {
        let mut url = url::Url::parse(&self.sim.authorize_url()).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", self.sim.client_id().as_str())
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", CALLBACK)
            .append_pair("scope", "ZohoCRM.modules.ALL")
            .append_pair("access_type", "offline")
            .append_pair("state", "s1");
        url.into()
    }
}

impl Reply {
    fn assert_invalid_code(&self) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.server.as_deref(), Some("ZGS"), "{self:?}");
        assert_eq!(self.json(), json!({"error": "invalid_code"}), "{self:?}");
    }

    /// Asserts a token success whose `api_domain` is `api_domain`; returns its access token.
    fn access_token_for(&self, api_domain: &str) -> String {
        let body = self.json();
        assert_eq!(body["api_domain"], api_domain, "{self:?}");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {self:?}"))
            .to_owned()
    }

    fn assert_invalid_token(&self) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{self:?}");
        assert_eq!(self.text, INVALID_TOKEN, "{self:?}");
    }
}

fn callback_params(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn each_data_center_listens_on_its_own_loopback_address() {
    let zoho = start(3).await;
    assert_eq!(zoho.sim.data_center_count(), 3);
    assert_eq!(zoho.dc(0), zoho.sim.url());
    for dc in 0..3 {
        let url = url::Url::parse(&zoho.dc(dc)).unwrap();
        assert_eq!(url.host_str(), Some(format!("127.0.0.{}", dc + 1).as_str()));
        assert!(url.port().is_some(), "{url}");
    }
    let locations: Vec<String> = (0..3)
        .map(|dc| zoho.sim.data_center_location(dc).unwrap())
        .collect();
    assert_eq!(locations, ["us", "sim1", "sim2"]);

    let unknown = UnknownDataCenter { index: 3, count: 3 };
    assert_eq!(zoho.sim.data_center_url(3), Err(unknown));
    assert_eq!(zoho.sim.mint_refresh_token_in(3, &[]).unwrap_err(), unknown);
    assert_eq!(zoho.sim.counters_in(3), Err(unknown));
    assert!(zoho.sim.issue_grant_code_in(7, &[], true, None).is_err());
    assert!(zoho.sim.data_center_location(3).is_err());
    let err = zoho
        .sim
        .accept_consent_in(&zoho.authorize_url(), 3)
        .unwrap_err();
    assert!(err.contains("no data centre 3"), "{err}");
}

#[tokio::test]
async fn a_data_center_count_out_of_range_is_an_error() {
    for count in [0, zoho_auth::sim::MAX_DATA_CENTERS + 1] {
        let err = Simulator::builder()
            .data_centers(count)
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(&count.to_string()), "{err}");
    }
}

#[tokio::test]
async fn one_data_center_is_the_default() {
    let zoho = Zoho::start().await;
    let explicit = start(1).await;
    for zoho in [&zoho, &explicit] {
        assert_eq!(zoho.sim.data_center_count(), 1);
        assert_eq!(zoho.dc(0), zoho.sim.url());
        assert_eq!(zoho.sim.addr().ip().to_string(), "127.0.0.1");
        assert!(zoho.sim.data_center_url(1).is_err());
        let refresh = zoho.sim.mint_refresh_token(&[]);
        let access = zoho
            .refresh_at(0, &refresh)
            .await
            .access_token_for(&zoho.dc(0));
        assert_eq!(zoho.crm_at(0, &access).await.status, StatusCode::OK);
        assert_eq!(zoho.sim.counters_in(0).unwrap(), zoho.sim.counters());
    }
}

#[tokio::test]
async fn a_refresh_token_works_only_at_its_own_data_center() {
    let zoho = start(3).await;
    let refresh = zoho.sim.mint_refresh_token_in(1, &[]).unwrap();
    let home = zoho.sim.mint_refresh_token(&[]);

    // Other DCs do not know the token: Zoho's answer to an unknown refresh token.
    zoho.refresh_at(0, &refresh).await.assert_invalid_code();
    zoho.refresh_at(2, &refresh).await.assert_invalid_code();
    zoho.refresh_at(1, &home).await.assert_invalid_code();
    let access = zoho
        .refresh_at(1, &refresh)
        .await
        .access_token_for(&zoho.dc(1));
    assert!(zoho.sim.is_access_token_live(&access));
    zoho.refresh_at(0, &home)
        .await
        .access_token_for(&zoho.dc(0));

    let mut expected = UserCounters::default();
    expected.refresh_grants = 3;
    expected.wrong_dc_refresh_grants = 2;
    expected.tokens_issued = 1;
    assert_eq!(zoho.user(&refresh), expected);
    expected.refresh_grants = 2;
    expected.wrong_dc_refresh_grants = 1;
    assert_eq!(zoho.user(&home), expected);
    let at = |dc| zoho.sim.counters_in(dc).unwrap();
    assert_eq!((at(0).refresh_grants, at(0).tokens_issued), (2, 1));
    assert_eq!((at(1).refresh_grants, at(1).tokens_issued), (2, 1));
    assert_eq!((at(2).refresh_grants, at(2).tokens_issued), (1, 0));
    assert_eq!(zoho.sim.counters().refresh_grants, 5);
    assert_eq!(zoho.sim.counters().tokens_issued, 2);
    assert_eq!(zoho.sim.counters_for(&RefreshToken::new("1000.x.y")), None);

    // The crate's own client sees the wrong DC as a revoked token, as it would at Zoho.
    let client_at = |dc| {
        AccountsClient::new(
            Accounts::custom(&zoho.dc(dc)).unwrap(),
            zoho.sim.client_id(),
            zoho.sim.client_secret(),
        )
        .unwrap()
    };
    let err = client_at(0).refresh(&refresh).await.unwrap_err();
    assert_eq!(err.zoho_code(), Some("invalid_code"), "{err:?}");
    assert!(err.is_invalid_grant(), "{err:?}");
    client_at(1).refresh(&refresh).await.unwrap();
}

#[tokio::test]
async fn an_access_token_is_accepted_only_by_its_own_data_centers_apis() {
    let zoho = start(2).await;
    let refresh = zoho.sim.mint_refresh_token_in(1, &[]).unwrap();
    let access = zoho
        .refresh_at(1, &refresh)
        .await
        .access_token_for(&zoho.dc(1));

    let ok = zoho.crm_at(1, &access).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(ok.json()["product"], "crm");
    zoho.crm_at(0, &access).await.assert_invalid_token();
    // Every product answers in its own dialect, as for a dead token.
    let desk = zoho
        .http
        .get(format!("{}/desk/api/v1/tickets", zoho.dc(0)))
        .header("Authorization", format!("Zoho-oauthtoken {access}"))
        .send()
        .await
        .unwrap();
    let desk = Reply::read(desk).await;
    assert_eq!(desk.status, StatusCode::UNAUTHORIZED);
    assert_eq!(desk.json()["errorCode"], "INVALID_OAUTH");
    // Still live where it belongs.
    assert_eq!(zoho.crm_at(1, &access).await.status, StatusCode::OK);

    let mut user = UserCounters::default();
    user.refresh_grants = 1;
    user.tokens_issued = 1;
    user.api_requests = 4;
    user.api_ok = 2;
    user.wrong_dc_api_requests = 2;
    assert_eq!(zoho.user(&refresh), user);

    let mut dc0 = Counters::default();
    dc0.api_requests = 2;
    dc0.api_token_errors = 2;
    assert_eq!(zoho.sim.counters_in(0).unwrap(), dc0);
    let mut dc1 = Counters::default();
    dc1.token_requests = 1;
    dc1.refresh_grants = 1;
    dc1.tokens_issued = 1;
    dc1.api_requests = 2;
    dc1.api_ok = 2;
    assert_eq!(zoho.sim.counters_in(1).unwrap(), dc1);
    let total = zoho.sim.counters();
    assert_eq!((total.api_requests, total.api_ok), (4, 2));
    assert_eq!((total.api_token_errors, total.token_requests), (2, 1));
}

#[tokio::test]
async fn dead_tokens_are_still_attributed_to_their_user_and_data_center() {
    let zoho = Zoho::with(Simulator::builder().data_centers(2).max_live_tokens(1)).await;
    let refresh = zoho.sim.mint_refresh_token_in(1, &[]).unwrap();
    let evicted = zoho
        .refresh_at(1, &refresh)
        .await
        .access_token_for(&zoho.dc(1));
    let live = zoho
        .refresh_at(1, &refresh)
        .await
        .access_token_for(&zoho.dc(1));
    assert!(!zoho.sim.is_access_token_live(&evicted));
    zoho.crm_at(1, &evicted).await.assert_invalid_token();
    zoho.crm_at(0, &evicted).await.assert_invalid_token();

    // Revocation at the wrong DC fails; at the right one it kills the live token.
    let revoke_at = |dc| {
        zoho.http
            .post(format!("{}/oauth/v2/token/revoke", zoho.dc(dc)))
            .form(&[("token", refresh.expose())])
            .send()
    };
    let wrong = Reply::read(revoke_at(0).await.unwrap()).await;
    assert_ne!(wrong.json()["status"], "success", "{wrong:?}");
    assert!(zoho.sim.is_access_token_live(&live));
    let right = Reply::read(revoke_at(1).await.unwrap()).await;
    assert_eq!(right.json(), json!({"status": "success"}));
    assert!(!zoho.sim.is_access_token_live(&live));
    zoho.crm_at(0, &live).await.assert_invalid_token();
    zoho.refresh_at(1, &refresh).await.assert_invalid_code();

    assert_eq!(zoho.sim.counters_in(0).unwrap().revocations, 0);
    assert_eq!(zoho.sim.counters_in(1).unwrap().revocations, 1);
    let user = zoho.user(&refresh);
    assert_eq!(user.api_requests, 3);
    assert_eq!(user.api_ok, 0);
    assert_eq!(user.wrong_dc_api_requests, 2);
    assert_eq!(user.refresh_grants, 3);
}

#[tokio::test]
async fn a_grant_code_exchanges_only_at_its_own_data_center() {
    let zoho = start(2).await;
    let code = zoho
        .sim
        .issue_grant_code_in(1, &["ZohoCRM.modules.ALL"], true, None)
        .unwrap();
    // The wrong DC does not know the code, so it stays unspent for the right one.
    zoho.exchange_at(0, code.expose(), None)
        .await
        .assert_invalid_code();
    let answer = zoho.exchange_at(1, code.expose(), None).await;
    let access = answer.access_token_for(&zoho.dc(1));
    let refresh = RefreshToken::new(answer.json()["refresh_token"].as_str().unwrap());
    zoho.exchange_at(1, code.expose(), None)
        .await
        .assert_invalid_code();

    // The refresh token it gave belongs to DC 1 too.
    zoho.refresh_at(0, &refresh).await.assert_invalid_code();
    zoho.refresh_at(1, &refresh)
        .await
        .access_token_for(&zoho.dc(1));
    zoho.crm_at(0, &access).await.assert_invalid_token();
    assert_eq!(zoho.user(&refresh).tokens_issued, 2);

    // `/sim/grant-code` hands out codes of the DC it is asked at.
    let code = zoho
        .http
        .get(format!("{}/sim/grant-code", zoho.dc(1)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    zoho.exchange_at(0, code.trim(), None)
        .await
        .assert_invalid_code();
    zoho.exchange_at(1, code.trim(), None)
        .await
        .access_token_for(&zoho.dc(1));
}

#[tokio::test]
async fn consent_lets_the_user_pick_their_data_center() {
    let zoho = start(3).await;
    let page = zoho.consent_page().await;
    // Every DC is on offer, the one serving the page (DC 0) preselected.
    assert!(
        page.text.contains(r#"<select id="dc" name="dc">"#),
        "{page:?}"
    );
    for dc in 0..3 {
        let location = zoho.sim.data_center_location(dc).unwrap();
        let option = format!(
            r#"<option value="{dc}"{}>{location} ({})</option>"#,
            if dc == 0 { " selected" } else { "" },
            zoho.dc(dc)
        );
        assert!(page.text.contains(&option), "{option}: {page:?}");
    }

    let decision = zoho.decide(&page.request_id(), "accept", Some("1")).await;
    assert_eq!(decision.status, StatusCode::FOUND, "{decision:?}");
    let params = callback_params(decision.location.as_deref().unwrap());
    assert_eq!(params["state"], "s1");
    assert_eq!(params["location"], "sim1");
    assert_eq!(params["accounts-server"], zoho.dc(1));

    let code = &params["code"];
    zoho.exchange_at(0, code, Some(CALLBACK))
        .await
        .assert_invalid_code();
    let answer = zoho.exchange_at(1, code, Some(CALLBACK)).await;
    let access = answer.access_token_for(&zoho.dc(1));
    let refresh = RefreshToken::new(answer.json()["refresh_token"].as_str().unwrap());
    assert_eq!(zoho.crm_at(1, &access).await.status, StatusCode::OK);
    zoho.refresh_at(0, &refresh).await.assert_invalid_code();

    // The consent was DC 0's page; the user's tokens are DC 1's.
    let at = |dc| zoho.sim.counters_in(dc).unwrap();
    assert_eq!((at(0).consents_shown, at(0).consents_accepted), (1, 1));
    assert_eq!((at(1).code_grants, at(1).tokens_issued), (1, 1));
    assert_eq!((at(0).code_grants, at(0).tokens_issued), (1, 0));
}

#[tokio::test]
async fn consent_without_a_choice_stays_at_the_data_center_serving_it() {
    let zoho = start(2).await;
    // As a browser test clicking `id="accept"` without touching the list, minus the `dc` field.
    let request_id = zoho.consent_page().await.request_id();
    let decision = zoho.decide(&request_id, "accept", None).await;
    let params = callback_params(decision.location.as_deref().unwrap());
    assert_eq!(params["location"], "us");
    assert_eq!(params["accounts-server"], zoho.sim.url());
    zoho.exchange_at(1, &params["code"], Some(CALLBACK))
        .await
        .assert_invalid_code();
    zoho.exchange_at(0, &params["code"], Some(CALLBACK))
        .await
        .access_token_for(&zoho.sim.url());

    // A DC that does not exist gets the error page, and spends the page.
    for dc in ["2", "one", ""] {
        let request_id = zoho.consent_page().await.request_id();
        for (dc, message) in [
            (dc, "Invalid data centre"),
            ("0", "Invalid or expired request"),
        ] {
            let decision = zoho.decide(&request_id, "accept", Some(dc)).await;
            assert_eq!(decision.status, StatusCode::BAD_REQUEST, "{decision:?}");
            assert!(decision.location.is_none(), "{decision:?}");
            let message = format!(r#"<p id="message">{message}</p>"#);
            assert!(decision.text.contains(&message), "{dc:?}: {decision:?}");
        }
    }
    assert_eq!(zoho.sim.counters().auth_errors, 6);
    assert_eq!(zoho.sim.counters().consents_accepted, 1);
}

#[tokio::test]
async fn accept_consent_in_picks_the_data_center() {
    let zoho = start(3).await;
    let url = zoho.authorize_url();
    let params = callback_params(&zoho.sim.accept_consent_in(&url, 2).unwrap());
    assert_eq!(params["location"], "sim2");
    assert_eq!(params["accounts-server"], zoho.dc(2));
    zoho.exchange_at(2, &params["code"], Some(CALLBACK))
        .await
        .access_token_for(&zoho.dc(2));
    let params = callback_params(&zoho.sim.accept_consent(&url).unwrap());
    assert_eq!(params["location"], "us");
    zoho.exchange_at(0, &params["code"], Some(CALLBACK))
        .await
        .access_token_for(&zoho.dc(0));

    // Another DC's consent page works too, its own DC preselected.
    let at_dc1 = url.replace(&zoho.dc(0), &zoho.dc(1));
    let params = callback_params(&zoho.sim.accept_consent(&at_dc1).unwrap());
    assert_eq!(params["location"], "sim1");
    assert_eq!(zoho.sim.counters_in(1).unwrap().consents_accepted, 1);
}

/// 3 DCs × 100 users, each refreshing at its own DC, calling its CRM and once, by mistake,
/// another DC's: every request is counted where it landed and for whom.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_users_in_many_data_centers() {
    const DCS: usize = 3;
    const USERS: usize = 100;
    const CALLS: u64 = 5;
    let zoho = Arc::new(start(DCS).await);
    let users: Vec<(usize, RefreshToken)> = (0..DCS)
        .flat_map(|dc| (0..USERS).map(move |_| dc))
        .map(|dc| (dc, zoho.sim.mint_refresh_token_in(dc, &[]).unwrap()))
        .collect();

    let mut tasks = tokio::task::JoinSet::new();
    for (dc, refresh) in users.clone() {
        let zoho = Arc::clone(&zoho);
        tasks.spawn(async move {
            let access = zoho
                .refresh_at(dc, &refresh)
                .await
                .access_token_for(&zoho.dc(dc));
            for _ in 0..CALLS {
                let reply = zoho.crm_at(dc, &access).await;
                assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            }
            zoho.crm_at((dc + 1) % DCS, &access)
                .await
                .assert_invalid_token();
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let mut user = UserCounters::default();
    user.refresh_grants = 1;
    user.tokens_issued = 1;
    user.api_requests = CALLS + 1;
    user.api_ok = CALLS;
    user.wrong_dc_api_requests = 1;
    for (_, refresh) in &users {
        assert_eq!(zoho.user(refresh), user);
    }
    let users = USERS as u64;
    for dc in 0..DCS {
        let mut expected = Counters::default();
        expected.token_requests = users;
        expected.refresh_grants = users;
        expected.tokens_issued = users;
        // Its own users' calls, and one each from the previous DC's users.
        expected.api_requests = users * (CALLS + 1);
        expected.api_ok = users * CALLS;
        expected.api_token_errors = users;
        assert_eq!(zoho.sim.counters_in(dc).unwrap(), expected, "DC {dc}");
    }
    let total = zoho.sim.counters();
    assert_eq!(total.api_requests, DCS as u64 * users * (CALLS + 1));
    assert_eq!(total.tokens_issued, DCS as u64 * users);
    let body: Value = zoho.crm_at(0, "1000.unknown.token").await.json();
    assert_eq!(body["code"], "INVALID_TOKEN");
}
