//! `POST /api/v1/query` through `oneshot`, on SQLite and PostgreSQL: SQL over the engine's
//! windows, the series registry, recent logs, prediction history and the action audit;
//! JSON and Arrow IPC answers; read-only; row limits; errors in the envelope.

use std::sync::{Arc, Mutex};

use aegis_core::ExecutorMode;
use aegis_store::testing::TestDb;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::healing_tests::{healing, run};
use crate::tests::{assert_envelope, bearer, send, test_auth};
use crate::{AppState, app};
use aegis_runtime::PolicyService;

/// A query by a caller who is a `user` and an `auditor` (who may read the action audit).
fn query(body: &Value, accept: Option<&str>) -> Request<Body> {
    query_as(body, accept, &["user", "auditor"])
}

fn query_as(body: &Value, accept: Option<&str>, roles: &[&str]) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri("/api/v1/query")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, bearer("caller-1", roles));
    if let Some(a) = accept {
        r = r.header(header::ACCEPT, a);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn sql_over_recent_data_and_history_on_both_backends() {
    for db in TestDb::both().await {
        let name = db.name();
        let h = healing(&db).await;
        run(&h).await;
        let (ingest, _rx) = aegis_ingest::Ingest::new(4, aegis_ingest::IngestLimits::default());
        ingest
            .registry()
            .lock()
            .unwrap()
            .resolve(
                &[
                    ("__name__", "cpu_usage"),
                    ("namespace", "production"),
                    ("pod", "api-1"),
                ],
                &aegis_ingest::SeriesLimits::default(),
            )
            .unwrap();
        let policies = Arc::new(PolicyService::new(db.store.clone()));
        policies.install_defaults_if_new().await.unwrap();
        policies.reload_database().await.unwrap();
        let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
            .with_auth(test_auth())
            .with_policies(policies)
            .with_healing(Arc::clone(&h))
            .with_ingest(
                ingest,
                Arc::new(Mutex::new(aegis_ingest::LatestSamples::default())),
            );
        let router = app(state.clone());

        // The windows: the peak CPU per workload over the short window.
        let sql = "SELECT workload, max(value) AS peak, count(*) AS n FROM samples \
                   WHERE metric = 'cpu_usage' GROUP BY workload ORDER BY workload";
        let (status, _, body) = send(router.clone(), query(&json!({"sql": sql}), None)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let rows = body["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{name}: {body}");
        assert_eq!(rows[0]["workload"], "api");
        assert!(
            rows[0]["peak"].as_f64().unwrap() > 0.9,
            "the spike is in the window: {body}"
        );
        assert_eq!(rows[0]["n"], 10, "ten one-second slots: {body}");
        assert_eq!(body["columns"][1]["name"], "peak");
        assert_eq!(body["truncated"], false);

        // The registry: label sets as JSON text.
        let (status, _, body) = send(
            router.clone(),
            query(
                &json!({"sql": "SELECT metric, labels, last_value FROM series"}),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["rows"][0]["metric"], "cpu_usage");
        assert!(
            body["rows"][0]["labels"]
                .as_str()
                .unwrap()
                .contains("\"pod\":\"api-1\"")
        );
        assert_eq!(body["rows"][0]["last_value"], Value::Null);

        // History: the engine's detection and the dry-run action it led to, joined.
        let sql = "SELECT a.action, a.status, p.entity FROM actions a \
                   JOIN predictions p ON p.entity = concat(a.namespace, '/', substr(a.target, 12)) \
                   WHERE a.phase = 'result' AND p.detector = 'engine'";
        let (status, _, body) = send(router.clone(), query(&json!({"sql": sql}), None)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(
            body["rows"][0],
            json!({"action": "scale_deployment", "status": "dry_run", "entity": "production/api"}),
            "{name}: {body}"
        );

        // Row limits: cut, and said so.
        let (status, _, body) = send(
            router.clone(),
            query(&json!({"sql": "SELECT * FROM samples", "limit": 2}), None),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(
            (body["row_count"].as_u64(), body["truncated"].as_bool()),
            (Some(2), Some(true))
        );
        assert!(
            body["rows"][0]["timestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z'),
            "{body}"
        );

        // Arrow IPC on request.
        let response = router
            .clone()
            .oneshot(query(
                &json!({"sql": "SELECT workload, value FROM samples ORDER BY workload LIMIT 5"}),
                Some("application/vnd.apache.arrow.stream"),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/vnd.apache.arrow.stream"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 5);

        // Read-only, valid SQL, known tables, sane limits: otherwise 400 in the envelope.
        for (body, what) in [
            (json!({"sql": "CREATE TABLE x AS SELECT 1"}), "DDL"),
            (
                json!({"sql": "INSERT INTO samples VALUES ('a','b','c',now(),1.0)"}),
                "DML",
            ),
            (json!({"sql": "SELEC 1"}), "syntax"),
            (json!({"sql": "SELECT * FROM secrets"}), "unknown table"),
            (json!({"sql": "  "}), "empty"),
            (json!({"sql": "SELECT 1", "limit": 0}), "limit"),
            (json!({"sql": "SELECT 1", "limit": 10_001}), "limit"),
        ] {
            let (status, headers, answer) = send(router.clone(), query(&body, None)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {what}: {answer}");
            assert_envelope(&answer, "bad_request", &headers);
        }
        let (status, headers, answer) = send(
            router.clone(),
            query(&json!({"sql": "SELECT 1", "extra": true}), None),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {answer}");
        assert_envelope(&answer, "unprocessable", &headers);
        // Not a user of the API at all: refused by the access policy.
        let mut anonymous = query(&json!({"sql": "SELECT 1"}), None);
        anonymous.headers_mut().remove(header::AUTHORIZATION);
        let (status, _, _) = send(router.clone(), anonymous).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Every query thread busy: one more is a 503 to retry, not a wait or a new thread.
        let busy = Arc::clone(state.running_queries())
            .acquire_many_owned(crate::routes::MAX_RUNNING_QUERIES as u32)
            .await
            .unwrap();
        let (status, headers, answer) =
            send(router.clone(), query(&json!({"sql": "SELECT 1"}), None)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {answer}");
        assert_envelope(&answer, "unavailable", &headers);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        drop(busy);
        let (status, _, answer) =
            send(router.clone(), query(&json!({"sql": "SELECT 1"}), None)).await;
        assert_eq!(status, StatusCode::OK, "{name}: {answer}");
        db.cleanup().await;
    }
}

/// Everything the endpoint does to a body before reading data, answered as the API would.
async fn plan_query_request(body: &[u8]) -> Result<(), crate::ApiError> {
    aegis_sql::plan_request(body)
        .await
        .map_err(crate::ApiError::from)
}

/// A `POST /api/v1/query` body asking for `sql`.
fn sql_body(sql: &str) -> Vec<u8> {
    json!({ "sql": sql }).to_string().into_bytes()
}

/// `sql` is refused before planning with a 400 whose message says `says`.
async fn assert_refused(sql: &str, says: &str) {
    let err = plan_query_request(&sql_body(sql)).await.expect_err(sql);
    assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{sql}");
    assert!(err.message().contains(says), "{sql}: {}", err.message());
}

/// `sql` plans (over empty tables); the error's message if not.
async fn assert_plans(sql: &str) {
    let planned = plan_query_request(&sql_body(sql)).await;
    assert!(
        planned.is_ok(),
        "{sql}: {:?}",
        planned.err().map(|e| e.message().to_owned())
    );
}

/// The `sql_request` fuzz target's first finding (2026-12-01): a dotted name of six parts
/// that names no field made DataFusion's planner panic (`unwrap` on "Incorrect number of
/// identifiers"). Now a 400 naming the limit, wherever the name stands; shorter names still
/// reach the planner, which answers for itself.
#[tokio::test]
async fn a_dotted_name_of_six_parts_is_a_400_not_a_planner_panic() {
    let found = format!(
        "SELECT{} j.entitHAVmax.p.ntitHAVmax.p.s~cLL",
        "+".repeat(21)
    );
    for sql in [
        found.as_str(),
        "SELECT a.b.c.d.e.f FROM series",
        "SELECT metric FROM series WHERE a . b . c . d . e . f . g = 1",
        "COPY (SELECT a.b.c.d.e.f) TO 'out.csv'",
        "EXPLAIN SELECT \"a\".b.c.d.e.f",
    ] {
        assert_refused(sql, "more than 5 parts").await;
    }
    for sql in [
        "SELECT series.metric FROM series",
        "SELECT datafusion.public.series.metric FROM series",
        "SELECT 'a.b.c.d.e.f.g' AS text, 1.5 AS n",
    ] {
        assert!(plan_query_request(&sql_body(sql)).await.is_ok(), "{sql}");
    }
    let err = plan_query_request(&sql_body("SELECT a.b.c.d.e FROM series"))
        .await
        .expect_err("five parts naming nothing");
    assert!(err.status().is_client_error(), "{}", err.message());
    assert!(!err.message().contains("more than 5 parts"));
}

/// The `sql_request` fuzz target's second finding (2026-12-01): a typed literal whose value
/// is not a string (`timestamp:DESC` is `TIMESTAMP` and the placeholder `:DESC`) made
/// DataFusion's planner panic (`unwrap` on `None`). Now a 400; string literals still plan,
/// and statements other than queries are refused before DataFusion plans them.
#[tokio::test]
async fn a_typed_literal_that_is_not_a_string_is_a_400_not_a_planner_panic() {
    let found = "SELECT * FROM logs WHERE level = 'r' AND line LIKE 'x%' ORDER BY timestamp:DESC";
    for sql in [
        found,
        "SELECT DATE 5",
        "SELECT TIMESTAMP $1",
        "SELECT metric FROM series WHERE last_value > INT NULL",
        "SELECT (SELECT TIME 1) AS t",
    ] {
        assert_refused(sql, "literal takes a quoted string").await;
    }
    for sql in [
        "CREATE EXTERNAL TABLE t (d DATE DEFAULT DATE 5) STORED AS CSV LOCATION 'x.csv'",
        "COPY (SELECT DATE 5) TO 'out.csv'",
        "INSERT INTO samples SELECT * FROM samples",
        "EXPLAIN SELECT DATE TRUE",
    ] {
        assert_refused(sql, "only queries are accepted").await;
    }
    for sql in [
        "SELECT DATE '2026-12-01' AS d",
        "SELECT count(*) FROM logs WHERE timestamp > TIMESTAMP '2026-12-01T00:00:00Z'",
        "WITH x AS (SELECT 1 AS n) SELECT n FROM x",
        "VALUES (1), (2)",
    ] {
        assert_plans(sql).await;
    }
}

/// `value`, then `n` operators alternating `+1` and `/0`: a `samples` expression DataFusion
/// cannot fold (a division by zero stays unevaluated).
fn unfoldable(n: usize) -> String {
    let mut sql = String::from("value");
    for i in 0..n {
        sql.push_str(if i % 2 == 0 { "+1" } else { "/0" });
    }
    sql
}

/// The `sql_request` fuzz target's third finding (2026-12-02): a `GROUP BY` of constant
/// expressions with divisions by zero took DataFusion 27 s to plan (time growing with the
/// fourth power of the expression's size), which the query timeout cannot interrupt. Now a
/// 400 before planning; an expression at the bound and a statement at its bound still plan.
#[tokio::test]
async fn an_expression_too_large_to_plan_quickly_is_a_400() {
    let found = include_str!(
        "../../fuzz/seeds/sql_request/timeout-08f231e5eaec322d289f217bc76f940610cbaf31"
    );
    let deep = format!("SELECT 1{}", "+1".repeat(8_000));
    for (sql, says) in [
        (found.to_owned(), "the statement has"),
        (deep, "the statement has 8000 operators"),
        (
            format!("SELECT 1 FROM samples GROUP BY {}", unfoldable(65)),
            "an expression has 65 operators",
        ),
        (
            format!("SELECT {} AS v FROM samples", unfoldable(65)),
            "an expression has 65",
        ),
        (
            format!("SELECT * FROM samples WHERE {} > 0", unfoldable(64)),
            "an expression has 65",
        ),
        (
            format!("SELECT (SELECT max({}) FROM samples) AS m", unfoldable(64)),
            "an expression has 65",
        ),
        (
            format!(
                "SELECT 1 FROM samples GROUP BY {}",
                vec![unfoldable(64); 5].join(", ")
            ),
            "the statement has 320 operators",
        ),
    ] {
        assert_refused(&sql, says).await;
    }
    for sql in [
        format!("SELECT 1 FROM samples GROUP BY {}", unfoldable(64)),
        format!(
            "SELECT 1 FROM samples GROUP BY {}",
            vec![unfoldable(64); 4].join(", ")
        ),
        "SELECT metric, count(*) FROM series WHERE metric LIKE 'http%' AND last_value > 0.5 \
         OR NOT metric IN ('up', 'down') GROUP BY metric"
            .to_owned(),
    ] {
        assert_plans(&sql).await;
    }
}

/// `SELECT`, then `n` times `open`, `inner`, and `n` times `close`.
fn nested(n: usize, open: &str, inner: &str, close: &str) -> String {
    format!("SELECT {}{inner}{}", open.repeat(n), close.repeat(n))
}

/// Found beside the third finding: sqlparser's parser recurses per level of nesting without
/// a stack guard, in frames of ~85 KiB in a debug build, so at DataFusion's recursion limit
/// (50) 30 nested calls, 20 nested subqueries or 23 nested `NOT`s overflowed a 2 MiB stack
/// (this test's thread, a tokio worker's) and aborted the process. Now nesting past 24
/// parser levels is a 400, and what is accepted parses on a stack of its own.
#[tokio::test]
async fn deep_nesting_is_a_400_not_a_stack_overflow() {
    for sql in [
        nested(30, "abs(", "1", ")"),
        nested(20, "(SELECT ", "1", ")"),
        nested(49, "(", "1", ")"),
        nested(49, "- ", "1", ""),
    ] {
        assert_refused(&sql, "nested too deeply").await;
    }
    // The parser backs out of these and reports the token where it stopped.
    for sql in [
        nested(49, "NOT ", "true", ""),
        nested(40, "CASE WHEN true THEN ", "1", " END"),
    ] {
        assert_refused(&sql, "sql: ").await;
    }
    for sql in [
        nested(11, "abs(", "1", ")"),
        nested(10, "(SELECT ", "1", ")"),
        nested(10, "NOT ", "true", ""),
        nested(10, "CASE WHEN true THEN ", "1", " END"),
        "SELECT workload FROM (SELECT workload, max(value) AS m FROM samples GROUP BY workload) \
         WHERE m > (SELECT avg(value) FROM samples WHERE metric IN (SELECT metric FROM series))"
            .to_owned(),
    ] {
        assert_plans(&sql).await;
    }
}

/// Over its time, a query is a 408 at once, whatever its thread is doing, and the thread
/// stops and gives back its permit (the permits are what bounds the threads).
#[tokio::test]
async fn a_query_over_its_time_is_a_408_and_frees_its_thread() {
    for db in TestDb::both().await {
        let name = db.name();
        let state = AppState::new(db.store.clone(), ExecutorMode::DryRun);
        let sql = "SELECT workload, count(*) FROM samples GROUP BY workload".to_owned();
        let keep = |s, b, t| Ok((s, b, t));
        let err =
            crate::routes::query::run_within(&state, sql, 10, std::time::Duration::ZERO, keep)
                .await
                .expect_err("no time at all");
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT, "{name}");
        assert_eq!(err.code(), crate::ErrorCode::Timeout, "{name}");
        let all = crate::routes::MAX_RUNNING_QUERIES as u32;
        let freed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            state.running_queries().acquire_many(all),
        )
        .await;
        assert!(freed.is_ok(), "{name}: the thread kept its permit");
        drop(freed);
        let (_, batches, _) = crate::routes::query::run_within(
            &state,
            "SELECT 1 AS one".to_owned(),
            10,
            std::time::Duration::from_secs(60),
            keep,
        )
        .await
        .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        db.cleanup().await;
    }
}

/// Issue 27, attack 9: role `user` is refused `/audit/logs` (403) but read the same rows
/// with `SELECT … FROM actions`. A table now carries the access rules of the endpoint that
/// shows its rows: the statement is refused before any data is read (a denial goes to the
/// decision audit like any other); tables the role may read stay readable.
#[tokio::test]
async fn sql_tables_carry_the_access_rules_of_their_endpoints() {
    for db in TestDb::both().await {
        let name = db.name();
        let policies = Arc::new(PolicyService::new(db.store.clone()));
        policies.install_defaults_if_new().await.unwrap();
        policies.reload_database().await.unwrap();
        let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
            .with_auth(test_auth())
            .with_policies(Arc::clone(&policies));
        let router = app(state);
        for sql in [
            "SELECT * FROM actions",
            "SELECT count(*) FROM \"ACTIONS\"",
            "SELECT 1 FROM predictions p JOIN actions a ON a.target = p.entity",
        ] {
            let (status, headers, body) = send(
                router.clone(),
                query_as(&json!({"sql": sql}), None, &["user"]),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {sql}: {body}");
            assert_envelope(&body, "forbidden", &headers);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("GET /audit/logs"),
                "{body}"
            );
        }
        let (status, _, body) = send(
            router.clone(),
            query_as(
                &json!({"sql": "SELECT count(*) AS n FROM predictions"}),
                None,
                &["user"],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        let (status, _, body) = send(
            router.clone(),
            query_as(
                &json!({"sql": "SELECT count(*) AS n FROM actions"}),
                None,
                &["user", "auditor"],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        db.cleanup().await;
    }
}

/// Issue 27, attack 2: statements that make data from nothing (`repeat`, `lpad`, table
/// functions) are refused before they run, and what runs has a memory budget (a sort over
/// it is a 400 naming `query_memory_mib`) and an answer budget.
#[tokio::test]
async fn statements_cannot_take_unbounded_memory() {
    let db = TestDb::sqlite().await;
    let policies = Arc::new(PolicyService::new(db.store.clone()));
    policies.install_defaults_if_new().await.unwrap();
    policies.reload_database().await.unwrap();
    let state = AppState::new(db.store.clone(), ExecutorMode::DryRun)
        .with_auth(test_auth())
        .with_policies(Arc::clone(&policies))
        .with_query_memory(4 << 20, 16 << 20);
    let router = app(state);
    for (sql, says) in [
        (
            "SELECT repeat('a', 300000000)",
            "`repeat` is not one of the functions",
        ),
        (
            "SELECT length(REPEAT('a', 300000000)) UNION ALL SELECT 1",
            "`repeat`",
        ),
        ("SELECT lpad('a', 300000000)", "`lpad`"),
        ("SELECT array_repeat(1, 300000000)", "`array_repeat`"),
        ("SELECT * FROM range(1000000000)", "table functions"),
        (
            "SELECT count(*) FROM generate_series(1, 1000000000)",
            "table functions",
        ),
        (
            "SELECT unnest(range(1, 1000000000))",
            "is not one of the functions",
        ),
    ] {
        let (status, headers, body) = send(router.clone(), query(&json!({"sql": sql}), None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        assert_envelope(&body, "bad_request", &headers);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{sql}: {body}"
        );
    }
    // An aggregate of 810,000 groups (four cross joins of 30 values) in a 4 MiB budget.
    let values: Vec<String> = (0..30).map(|i| format!("({i})")).collect();
    let sql = format!(
        "WITH v AS (SELECT * FROM (VALUES {}) AS t(x)) \
         SELECT concat('row ', a.x, ' ', b.x, ' ', c.x, ' ', d.x) AS s, count(*) AS n \
         FROM v a CROSS JOIN v b CROSS JOIN v c CROSS JOIN v d GROUP BY s",
        values.join(", ")
    );
    let (status, _, body) = send(router.clone(), query(&json!({"sql": sql}), None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query_memory_mib"),
        "{body}"
    );
    // Everyday analytics still run.
    let sql = "SELECT upper(concat('a', 'b')) AS x, round(avg(v), 2) AS m \
               FROM (VALUES (1.0), (2.0), (4.0)) AS t(v)";
    let (status, _, body) = send(router.clone(), query(&json!({"sql": sql}), None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0]["x"], "AB", "{body}");
    db.cleanup().await;
}
