# Sourced (`source scripts/s3-env.sh`) before `cargo test`: installs moto's S3 server if
# missing (scripts/s3-server.sh) and exports PIPELET_TEST_MOTO, the moto_server that the
# S3 tests start, one per test on a free port. Without it those tests fail, unless
# PIPELET_SKIP_S3=1 says to skip them.
if [ "${PIPELET_SKIP_S3:-}" != 1 ] && [ -z "${PIPELET_TEST_MOTO:-}" ]; then
    PIPELET_TEST_MOTO="$("$(dirname "${BASH_SOURCE[0]}")/s3-server.sh" path)" || {
        echo "scripts/s3-env.sh: cannot install moto's S3 server (set PIPELET_SKIP_S3=1 to skip the S3 tests)" >&2
        return 1 2>/dev/null || exit 1
    }
    export PIPELET_TEST_MOTO
fi
