//! `docs/errors.md` is generated from the error-code table; this fails when it is stale.
//! `PIPELET_BLESS=1 cargo test -p pipelet-api --test it error_docs` rewrites it.

use pipelet_api::ErrorCode;

#[test]
fn errors_md_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/errors.md");
    let want = ErrorCode::markdown();
    if std::env::var_os("PIPELET_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/errors.md is stale: run `PIPELET_BLESS=1 cargo test -p pipelet-api --test \
         it error_docs` and commit the result"
    );
}

#[test]
fn errors_md_lists_every_code() {
    let text = ErrorCode::markdown();
    for code in ErrorCode::ALL {
        assert!(text.contains(&format!("| `{}` | {} |", code.as_str(), code.status())));
    }
}
