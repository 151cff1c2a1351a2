//! The compute backend: Burn's pure-Rust CPU backend (Flex) by default, CUDA behind the `cuda`
//! cargo feature. Jobs take a [`Compute`] and never name a backend type: Burn 0.22 picks the
//! backend from the device at run time, so the same model code runs on either.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Where tensors live and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// Burn Flex on the CPU (always available).
    #[default]
    Cpu,
    /// A CUDA GPU by index (needs the `cuda` feature).
    Cuda(usize),
}

impl Compute {
    /// The Burn device.
    pub fn device(self) -> Result<Device> {
        match self {
            Compute::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            Compute::Cuda(i) => Ok(Device::cuda(i)),
            #[cfg(not(feature = "cuda"))]
            Compute::Cuda(_) => Err(Error::DeviceUnavailable(self.to_string())),
        }
    }

    /// A stable name recorded with results: bit-for-bit recomputation needs the same backend.
    pub fn backend_name(self) -> &'static str {
        match self {
            Compute::Cpu => "burn-flex-cpu",
            Compute::Cuda(_) => "burn-cuda",
        }
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compute::Cpu => f.write_str("cpu"),
            Compute::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Compute {
    type Err = Error;

    fn from_str(s: &str) -> Result<Compute> {
        match s {
            "cpu" => Ok(Compute::Cpu),
            "cuda" => Ok(Compute::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Compute::Cuda(i)),
                _ => Err(Error::InvalidArgument(format!("unknown device `{s}` (use cpu, cuda or cuda:N)"))),
            },
        }
    }
}
