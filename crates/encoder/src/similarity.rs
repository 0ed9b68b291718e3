//! ST's similarity functions (`model.similarity`, `model.similarity_pairwise`).

use crate::Embeddings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimilarityFn {
    #[default]
    Cosine,
    Dot,
    /// Negative Euclidean distance.
    Euclidean,
    /// Negative Manhattan distance.
    Manhattan,
}

impl SimilarityFn {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cosine" => SimilarityFn::Cosine,
            "dot" | "dot_product" => SimilarityFn::Dot,
            "euclidean" => SimilarityFn::Euclidean,
            "manhattan" => SimilarityFn::Manhattan,
            _ => return None,
        })
    }

    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            SimilarityFn::Cosine => {
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                dot(a, b) / (norm(a) * norm(b))
            }
            SimilarityFn::Dot => dot(a, b),
            SimilarityFn::Euclidean => -a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            SimilarityFn::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        }
    }

    /// `[a.rows(), b.rows()]` matrix of scores.
    pub fn matrix(self, a: &Embeddings, b: &Embeddings) -> Embeddings {
        let mut data = Vec::with_capacity(a.rows() * b.rows());
        for x in a.iter() {
            data.extend(b.iter().map(|y| self.score(x, y)));
        }
        Embeddings::new(data, a.rows(), b.rows())
    }

    /// Score of each row of `a` with the same row of `b`.
    pub fn pairwise(self, a: &Embeddings, b: &Embeddings) -> Vec<f32> {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| self.score(x, y))
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
