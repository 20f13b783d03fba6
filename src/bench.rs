//! `notifyd bench`: measures the daemon on this machine (filled in below).

/// Bench options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
