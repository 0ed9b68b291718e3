//! The worker process of a pool-encode pool. Started by the pool, never by hand.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pool_encode_pool::worker::main(&args)
}
