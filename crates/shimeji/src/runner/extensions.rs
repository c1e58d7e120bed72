//! The runner extensions of this build: the one place that names the
//! features that plug into a runner.

use crate::config::Config;
use crate::container::StartError;
use crate::extension::{RunnerExtension, RunnerExtensions};

/// The extensions a runner with `config` gets from this build: the one
/// place that names the features that plug into the runner.
pub(crate) fn registered(config: &Config) -> Result<RunnerExtensions, StartError> {
    #[allow(unused_mut)]
    let mut all: Vec<Box<dyn RunnerExtension>> = Vec::new();
    #[cfg(feature = "http")]
    {
        if let Some(ops) = crate::http::ops::OpsServer::from_config(config) {
            all.push(Box::new(ops));
        }
        all.push(Box::new(crate::http::server::WebServer::default()));
    }
    #[cfg(not(feature = "http"))]
    if config.metrics_address().is_some() {
        return Err(StartError::Unsupported(
            "METRICS_ADDRESS is set, but this build of shimeji has no web server (feature `http`); \
             serve `shimeji::metrics::render()` yourself or unset it"
                .into(),
        ));
    }
    Ok(RunnerExtensions::new(all))
}
