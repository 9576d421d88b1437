//! Fuzz `POST /api/v1/query`'s request handling: the body as JSON, the request checks, and a
//! read-only logical and physical plan over empty tables with the real schemas. Input that
//! starts with `{` is the body itself; anything else is the `sql` of a body, so the fuzzer
//! spends its time on SQL rather than on JSON. Any `Err` is fine; a panic is the bug.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let body = if data.first() == Some(&b'{') {
        data.to_vec()
    } else {
        let sql = String::from_utf8_lossy(data);
        serde_json::json!({"sql": sql}).to_string().into_bytes()
    };
    if let Err(e) = runtime().block_on(aegis_api::plan_query_request(&body)) {
        // Bad input is the client's: a 4xx, never a 5xx.
        assert!(
            e.status().is_client_error(),
            "{} for {:?}: {}",
            e.status(),
            String::from_utf8_lossy(&body),
            e.message()
        );
    }
});
