//! The worker process of a pool-encode pool. Started by the pool, never by hand.

fn main() -> std::process::ExitCode {
    pool_encode_pool::worker::main()
}
