//! Fuzz `POST /api/v1/query`'s request handling: the body as JSON, the request checks, and a
//! read-only logical and physical plan over empty tables with the real schemas. Input that
//! starts with `{` is the body itself; anything else is the `sql` of a body, so the fuzzer
//! spends its time on SQL rather than on JSON. Any `Err` is fine; a panic is the bug. Each
//! input is planned on a thread with the server's stack (tokio's 2 MiB, as the blocking
//! thread `POST /api/v1/query` plans on), not libFuzzer's 8 MiB main thread, so a stack
//! overflow the server would have is a crash here too.
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

/// The stack of tokio's worker and blocking threads, where the server plans.
const SERVER_STACK: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let body = if data.first() == Some(&b'{') {
        data.to_vec()
    } else {
        let sql = String::from_utf8_lossy(data);
        serde_json::json!({"sql": sql}).to_string().into_bytes()
    };
    let planned = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(SERVER_STACK)
            .spawn_scoped(scope, || runtime().block_on(aegis_sql::plan_request(&body)))
            .unwrap_or_else(|e| panic!("a planning thread: {e}"))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if let Err(e) = planned {
        // Bad input is the client's: a 4xx (`Invalid`), never a 5xx.
        assert!(
            matches!(e, aegis_sql::Error::Invalid(_)),
            "{e:?} for {:?}",
            String::from_utf8_lossy(&body),
        );
    }
});
