//! Device strings: `cpu` (all cores), `cpu:N` (N threads), `cuda:K`, `wgpu:K`.

use std::fmt;
use std::str::FromStr;

use crate::error::EncodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// CPU with `threads` threads (`None`: as many as rayon's global pool has).
    Cpu {
        threads: Option<usize>,
    },
    Cuda(usize),
    Wgpu(usize),
}

impl Default for Device {
    fn default() -> Self {
        Device::Cpu { threads: None }
    }
}

impl FromStr for Device {
    type Err = EncodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, index) = match s.trim().split_once(':') {
            Some((kind, index)) => {
                let n = index.parse::<usize>().map_err(|_| {
                    EncodeError::InvalidOption(format!("device {s:?}: {index:?} is not a number"))
                })?;
                (kind, Some(n))
            }
            None => (s.trim(), None),
        };
        match (kind, index) {
            ("cpu", Some(0)) => Err(EncodeError::InvalidOption(format!(
                "device {s:?}: a CPU device needs at least 1 thread"
            ))),
            ("cpu", threads) => Ok(Device::Cpu { threads }),
            ("cuda", k) => Ok(Device::Cuda(k.unwrap_or(0))),
            ("wgpu", k) => Ok(Device::Wgpu(k.unwrap_or(0))),
            _ => Err(EncodeError::InvalidOption(format!(
                "unknown device {s:?} (expected cpu, cpu:N, cuda:K or wgpu:K)"
            ))),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu { threads: None } => write!(f, "cpu"),
            Device::Cpu { threads: Some(n) } => write!(f, "cpu:{n}"),
            Device::Cuda(k) => write!(f, "cuda:{k}"),
            Device::Wgpu(k) => write!(f, "wgpu:{k}"),
        }
    }
}

/// The float type a model computes in. GPU backends offer half precision; CPU is f32 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = EncodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "f16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(EncodeError::InvalidOption(format!(
                "unknown precision {s:?} (expected f32, f16 or bf16)"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn parses_device_strings() {
        assert_eq!(
            "cpu".parse::<Device>().unwrap(),
            Device::Cpu { threads: None }
        );
        assert_eq!(
            "cpu:3".parse::<Device>().unwrap(),
            Device::Cpu { threads: Some(3) }
        );
        assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert!("cpu:0".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        assert_eq!("cpu:2".parse::<Device>().unwrap().to_string(), "cpu:2");
        assert_eq!("wgpu".parse::<Device>().unwrap(), Device::Wgpu(0));
    }

    #[test]
    fn parses_precisions() {
        use super::Precision;
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("half".parse::<Precision>().unwrap(), Precision::F16);
        assert!("f8".parse::<Precision>().is_err());
    }
}
