//! ST's embedding quantization (`encode(precision=…)` and `quantize_embeddings`): int8 / uint8
//! scalar quantization with a range per dimension, and binary / ubinary sign bits packed eight to
//! a byte. The arithmetic is ST's (6.2) step for step in f32, so the same float rows give the same
//! bytes; [`Quantizer`] does it a slice of rows at a time, for outputs written as they arrive.

use std::fmt;
use std::str::FromStr;

use crate::embeddings::Embeddings;
use crate::error::{EncodeError, Result};

/// ST's `precision` other than `float32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// One signed byte a dimension: `floor((x - min) / step) - 128`, step = (max - min) / 255.
    Int8,
    /// One byte a dimension: `floor((x - min) / step)`.
    Uint8,
    /// Sign bits (`x > 0`), eight dimensions a byte, first dimension in the high bit, stored
    /// as the packed byte minus 128 (signed).
    Binary,
    /// Sign bits packed as in `Binary`, the bytes as they are (unsigned).
    Ubinary,
}

impl Quantization {
    /// Bytes a row of `dim` floats becomes: `dim`, or `ceil(dim / 8)` for the bit kinds (each
    /// row padded with zero bits, as `np.packbits(…, axis=-1)` does).
    pub fn output_dim(self, dim: usize) -> usize {
        match self {
            Quantization::Int8 | Quantization::Uint8 => dim,
            Quantization::Binary | Quantization::Ubinary => dim.div_ceil(8),
        }
    }

    /// Whether the bytes are signed values (int8, binary) rather than unsigned (uint8, ubinary).
    pub fn is_signed(self) -> bool {
        matches!(self, Quantization::Int8 | Quantization::Binary)
    }

    /// int8 and uint8 need each dimension's range; the bit kinds need nothing.
    pub fn needs_ranges(self) -> bool {
        matches!(self, Quantization::Int8 | Quantization::Uint8)
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantization::Int8 => "int8",
            Quantization::Uint8 => "uint8",
            Quantization::Binary => "binary",
            Quantization::Ubinary => "ubinary",
        }
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Quantization {
    type Err = EncodeError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "int8" => Ok(Quantization::Int8),
            "uint8" => Ok(Quantization::Uint8),
            "binary" => Ok(Quantization::Binary),
            "ubinary" => Ok(Quantization::Ubinary),
            other => Err(EncodeError::InvalidOption(format!(
                "unknown quantization {other:?} (int8, uint8, binary or ubinary)"
            ))),
        }
    }
}

/// Each dimension's minimum and maximum: ST's `ranges` (`[2, dim]`), which it computes from
/// `calibration_embeddings`, or from the embeddings being quantized when given neither.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizationRanges {
    min: Vec<f32>,
    max: Vec<f32>,
}

impl QuantizationRanges {
    pub fn new(min: Vec<f32>, max: Vec<f32>) -> Result<Self> {
        if min.len() != max.len() || min.is_empty() {
            return Err(EncodeError::InvalidOption(format!(
                "quantization ranges need a minimum and a maximum for each of at least one dimension, got {} and {}",
                min.len(),
                max.len()
            )));
        }
        Ok(QuantizationRanges { min, max })
    }

    /// The per-dimension minimum and maximum over `embeddings`' rows (at least one).
    pub fn from_embeddings(embeddings: &Embeddings) -> Result<Self> {
        let mut builder = RangesBuilder::new(embeddings.dim());
        builder.add_rows(embeddings.as_slice());
        builder.finish()
    }

    pub fn dim(&self) -> usize {
        self.min.len()
    }

    pub fn min(&self) -> &[f32] {
        &self.min
    }

    pub fn max(&self) -> &[f32] {
        &self.max
    }
}

/// [`QuantizationRanges::from_embeddings`] over rows that arrive a block at a time (a file
/// larger than memory): the same minima and maxima, whatever the blocks.
#[derive(Debug, Clone)]
pub struct RangesBuilder {
    min: Vec<f32>,
    max: Vec<f32>,
    rows: u64,
}

impl RangesBuilder {
    pub fn new(dim: usize) -> Self {
        RangesBuilder {
            min: vec![f32::INFINITY; dim],
            max: vec![f32::NEG_INFINITY; dim],
            rows: 0,
        }
    }

    /// Takes whole rows of `dim` floats, row-major.
    pub fn add_rows(&mut self, values: &[f32]) {
        let dim = self.min.len().max(1);
        assert_eq!(values.len() % dim, 0, "add_rows: partial row");
        for row in values.chunks_exact(dim) {
            for ((lo, hi), &v) in self.min.iter_mut().zip(&mut self.max).zip(row) {
                // As np.min / np.max: a NaN anywhere makes the dimension's range NaN.
                if v < *lo || v.is_nan() {
                    *lo = v;
                }
                if v > *hi || v.is_nan() {
                    *hi = v;
                }
            }
        }
        self.rows += (values.len() / dim) as u64;
    }

    /// Rows taken so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The ranges of the rows taken (at least one).
    pub fn finish(self) -> Result<QuantizationRanges> {
        if self.rows == 0 {
            return Err(EncodeError::InvalidOption(
                "quantization ranges need at least one embedding".into(),
            ));
        }
        QuantizationRanges::new(self.min, self.max)
    }
}

/// Quantizes rows of `dim` floats with fixed ranges: the same bytes whichever slices of rows it
/// is given, so a streamed output equals a quantized whole.
#[derive(Debug, Clone)]
pub struct Quantizer {
    quantization: Quantization,
    dim: usize,
    /// Per dimension (int8 / uint8 only): the range's start and the width of one of 255 steps.
    starts: Vec<f32>,
    steps: Vec<f32>,
}

impl Quantizer {
    /// `ranges` are required for int8 / uint8 (and must have `dim` dimensions), ignored for
    /// the bit kinds, as in ST.
    pub fn new(
        quantization: Quantization,
        dim: usize,
        ranges: Option<&QuantizationRanges>,
    ) -> Result<Self> {
        let (starts, steps) = match (quantization.needs_ranges(), ranges) {
            (false, _) => (Vec::new(), Vec::new()),
            (true, None) => {
                return Err(EncodeError::InvalidOption(format!(
                    "{quantization} quantization needs each dimension's range: calibration embeddings or ranges"
                )));
            }
            (true, Some(ranges)) if ranges.dim() != dim => {
                return Err(EncodeError::InvalidOption(format!(
                    "the quantization ranges have {} dimensions, the embeddings {dim}",
                    ranges.dim()
                )));
            }
            (true, Some(ranges)) => {
                let steps = ranges
                    .min
                    .iter()
                    .zip(&ranges.max)
                    .map(|(lo, hi)| match (hi - lo) / 255.0 {
                        // A constant dimension: ST divides by 1 instead of 0.
                        0.0 => 1.0,
                        step => step,
                    })
                    .collect();
                (ranges.min.clone(), steps)
            }
        };
        Ok(Quantizer {
            quantization,
            dim,
            starts,
            steps,
        })
    }

    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// Bytes a quantized row takes.
    pub fn output_dim(&self) -> usize {
        self.quantization.output_dim(self.dim)
    }

    /// Appends the quantized bytes of `values` (whole rows of `dim` floats, row-major) to `out`;
    /// signed kinds as two's-complement bytes.
    pub fn quantize_into(&self, values: &[f32], out: &mut Vec<u8>) {
        let dim = self.dim.max(1);
        assert_eq!(values.len() % dim, 0, "quantize_into: partial row");
        out.reserve(values.len() / dim * self.output_dim());
        for row in values.chunks_exact(dim) {
            match self.quantization {
                Quantization::Int8 | Quantization::Uint8 => {
                    let offset = if self.quantization.is_signed() {
                        128
                    } else {
                        0
                    };
                    out.extend(row.iter().zip(&self.starts).zip(&self.steps).map(
                        |((&x, &start), &step)| {
                            // `as u8` saturates, as ST's np.clip(…, 0, 255) does; NaN gives 0.
                            let level = ((x - start) / step).floor() as u8;
                            (level as i16 - offset) as u8
                        },
                    ));
                }
                Quantization::Binary | Quantization::Ubinary => {
                    let offset = if self.quantization.is_signed() {
                        0x80
                    } else {
                        0
                    };
                    out.extend(row.chunks(8).map(|bits| {
                        let packed = bits
                            .iter()
                            .enumerate()
                            .fold(0u8, |byte, (i, &x)| byte | (u8::from(x > 0.0) << (7 - i)));
                        // binary is ST's `packbits(…) - 128` as int8: the high bit flipped.
                        packed ^ offset
                    }));
                }
            }
        }
    }
}

/// Quantized rows: `rows × dim` bytes, row-major; what [`quantize_embeddings`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedEmbeddings {
    data: Vec<u8>,
    rows: usize,
    dim: usize,
    quantization: Quantization,
}

impl QuantizedEmbeddings {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes a row (for the bit kinds: `ceil(dimensions / 8)`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// Row `i`'s bytes (signed kinds as two's complement; see [`as_i8`](Self::as_i8)).
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Every byte, row-major: the values of uint8 / ubinary.
    pub fn as_u8(&self) -> &[u8] {
        &self.data
    }

    /// Every byte read as signed, row-major: the values of int8 / binary.
    pub fn as_i8(&self) -> &[i8] {
        bytemuck::cast_slice(&self.data)
    }
}

/// ST's `quantize_embeddings(embeddings, precision, ranges)`: with no `ranges`, int8 / uint8
/// take them from `embeddings` themselves (which ST refuses for a single embedding, and so does
/// this); prefer ranges from a calibration set, [`QuantizationRanges::from_embeddings`].
pub fn quantize_embeddings(
    embeddings: &Embeddings,
    quantization: Quantization,
    ranges: Option<&QuantizationRanges>,
) -> Result<QuantizedEmbeddings> {
    if embeddings.is_empty() {
        return Ok(QuantizedEmbeddings {
            data: Vec::new(),
            rows: 0,
            dim: quantization.output_dim(embeddings.dim()),
            quantization,
        });
    }
    let own;
    let ranges = match ranges {
        None if quantization.needs_ranges() => {
            if embeddings.rows() == 1 {
                return Err(EncodeError::InvalidOption(format!(
                    "cannot compute {quantization} quantization ranges from a single embedding: give ranges from a representative set"
                )));
            }
            own = QuantizationRanges::from_embeddings(embeddings)?;
            Some(&own)
        }
        ranges => ranges,
    };
    let quantizer = Quantizer::new(quantization, embeddings.dim(), ranges)?;
    let mut data = Vec::new();
    quantizer.quantize_into(embeddings.as_slice(), &mut data);
    Ok(QuantizedEmbeddings {
        data,
        rows: embeddings.rows(),
        dim: quantizer.output_dim(),
        quantization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules on small inputs; the expected bytes are what ST 6.2's `quantize_embeddings`
    /// returns for the same arrays (checked by hand; its outputs on a real model are compared in
    /// tests/dense_reference.rs).
    #[test]
    fn bits_are_packed_high_bit_first_and_rows_padded() {
        let rows = Embeddings::new(
            vec![
                1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 3.0, 1.0, 4.0, 0.0, //
                -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0,
            ],
            2,
            10,
        );
        let ubinary = quantize_embeddings(&rows, Quantization::Ubinary, None).unwrap();
        assert_eq!(ubinary.dim(), 2);
        assert_eq!(ubinary.as_u8(), &[0b1001_1011, 0b1000_0000, 0, 0]);
        let binary = quantize_embeddings(&rows, Quantization::Binary, None).unwrap();
        assert_eq!(binary.as_i8(), &[(0b1001_1011 - 128) as i8, 0, -128, -128]);
    }

    #[test]
    fn scalar_levels_span_each_dimensions_range() {
        let rows = Embeddings::new(vec![-1.0, 5.0, 1.0, 5.0, 0.0, 5.0], 3, 2);
        let uint8 = quantize_embeddings(&rows, Quantization::Uint8, None).unwrap();
        // Dimension 0: min → 0; max → 254, not 255: in f32, 2 / (2 / 255) = 254.99998, floored;
        // the middle → floor(127.49999). Dimension 1 is constant: its step is 1, its level 0.
        assert_eq!(uint8.as_u8(), &[0, 0, 254, 0, 127, 0]);
        let int8 = quantize_embeddings(&rows, Quantization::Int8, None).unwrap();
        assert_eq!(int8.as_i8(), &[-128, -128, 126, -128, -1, -128]);
        // Ranges narrower than the values saturate.
        let narrow = QuantizationRanges::new(vec![0.0, 5.0], vec![0.5, 6.0]).unwrap();
        let clipped = quantize_embeddings(&rows, Quantization::Uint8, Some(&narrow)).unwrap();
        assert_eq!(clipped.as_u8(), &[0, 0, 255, 0, 0, 0]);
    }

    #[test]
    fn ranges_are_required_and_must_fit() {
        let one = Embeddings::new(vec![1.0, 2.0], 1, 2);
        assert!(quantize_embeddings(&one, Quantization::Int8, None).is_err());
        assert!(quantize_embeddings(&one, Quantization::Binary, None).is_ok());
        let wrong = QuantizationRanges::new(vec![0.0; 3], vec![1.0; 3]).unwrap();
        let error = Quantizer::new(Quantization::Uint8, 2, Some(&wrong)).unwrap_err();
        assert!(error.to_string().contains("3 dimensions"), "{error}");
        let empty = Embeddings::new(Vec::new(), 0, 2);
        assert_eq!(
            quantize_embeddings(&empty, Quantization::Int8, None)
                .unwrap()
                .rows(),
            0
        );
        assert!("int4".parse::<Quantization>().is_err());
    }

    #[test]
    fn ranges_built_block_by_block_equal_ranges_of_the_whole() {
        let values: Vec<f32> = (0..7 * 3).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let whole = Embeddings::new(values.clone(), 7, 3);
        for block_rows in [1, 2, 7] {
            let mut builder = RangesBuilder::new(3);
            values
                .chunks(block_rows * 3)
                .for_each(|b| builder.add_rows(b));
            assert_eq!(builder.rows(), 7);
            assert_eq!(
                builder.finish().unwrap(),
                QuantizationRanges::from_embeddings(&whole).unwrap()
            );
        }
        // A NaN poisons its dimension's range wherever it comes (np.min / np.max do the same).
        let mut builder = RangesBuilder::new(2);
        builder.add_rows(&[1.0, f32::NAN, 2.0, 0.0]);
        builder.add_rows(&[0.5, 3.0]);
        let ranges = builder.finish().unwrap();
        assert_eq!((ranges.min()[0], ranges.max()[0]), (0.5, 2.0));
        assert!(ranges.min()[1].is_nan() && ranges.max()[1].is_nan());
        assert!(RangesBuilder::new(2).finish().is_err());
    }
}
