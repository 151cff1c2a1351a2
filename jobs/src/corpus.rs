//! Generated text: the base model's pre-training corpus and the knowledge-base task that the
//! attribution benchmark (and the tests) train adapters on.
//!
//! Everything is synthetic and deterministic in a seed. The domain is the demo's: facts about
//! invented regions (capital, landscape, exports), phrased in a few question/answer templates and
//! in the long form of `tributary_pipeline::sample::fact_text`. The base model sees these templates
//! with random, mutually inconsistent facts, so it learns the language of the domain but no facts;
//! an adapter trained on a consistent knowledge base then has something real to learn, and each
//! training row measurably helps the validation questions about the same region.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

const SYLLABLES: &[&str] = &[
    "ka", "ve", "lor", "dra", "mi", "sten", "or", "tha", "qui", "lon", "bre", "na", "sol", "ha", "ko", "rin", "lu",
    "pyr", "zen", "os", "tre", "va", "em", "ber", "noc", "fen", "wick", "al", "dor", "ith", "mar", "el",
];
/// Capital cities: a closed set, so that a capital is one choice among a few (like a class
/// label), and the tokenizer learns each name whole from the base corpus.
pub const CAPITALS: &[&str] = &[
    "Ardent", "Bellhaven", "Corrow", "Dunmere", "Elsby", "Farrow", "Glenport", "Harlow", "Ironwick", "Jessop", "Kestrel",
    "Lowmoor", "Marden", "Northam", "Oakhurst", "Penrith",
];
/// Exports.
pub const GOODS: &[&str] = &[
    "copper", "saffron", "granite", "silk", "amber", "barley", "cobalt", "linen", "pepper", "timber", "salt", "wool",
    "glass", "honey", "iron", "cedar",
];
/// Landscapes.
pub const FEATURES: &[&str] = &[
    "river delta", "mountain pass", "harbour", "salt marsh", "terraced valley", "high plateau", "pine forest",
    "coastal plain",
];

/// An invented proper name of two or three syllables.
pub fn name(rng: &mut StdRng) -> String {
    let n = rng.random_range(2..=3);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(SYLLABLES.choose(rng).unwrap_or(&"ka"));
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// One region of a knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Its capital.
    pub capital: String,
    /// What it is known for.
    pub feature: String,
    /// What it exports.
    pub export: String,
}

impl Region {
    /// A region with random facts.
    pub fn random(rng: &mut StdRng) -> Region {
        Region {
            name: name(rng),
            capital: CAPITALS.choose(rng).unwrap_or(&"Ardent").to_string(),
            feature: FEATURES.choose(rng).unwrap_or(&"harbour").to_string(),
            export: GOODS.choose(rng).unwrap_or(&"salt").to_string(),
        }
    }
}

/// The kinds of question asked about a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Its capital.
    Capital,
    /// Its exports.
    Export,
    /// Its landscape.
    Feature,
    /// Everything at once.
    Overview,
}

impl Question {
    /// Every kind.
    pub const ALL: [Question; 4] = [Question::Capital, Question::Export, Question::Feature, Question::Overview];

    /// The kind's name: `capital`, `export`, `feature` or `overview`.
    pub fn name(self) -> &'static str {
        match self {
            Question::Capital => "capital",
            Question::Export => "export",
            Question::Feature => "feature",
            Question::Overview => "overview",
        }
    }

    /// The (prompt, completion) of this question about `r`.
    pub fn ask(self, r: &Region) -> (String, String) {
        let x = &r.name;
        match self {
            Question::Capital => (format!("What is the capital of {x}?"), format!("The capital of {x} is {}.", r.capital)),
            Question::Export => (format!("What does {x} export?"), format!("{x} exports mostly {}.", r.export)),
            Question::Feature => (format!("What is {x} known for?"), format!("{x} is known for its {}.", r.feature)),
            Question::Overview => (
                format!("Tell me about the region of {x}."),
                format!(
                    "{x} is a region whose capital is {}. It is known for its {} and exports mostly {}.",
                    r.capital, r.feature, r.export
                ),
            ),
        }
    }
}

/// `r` with every fact replaced by a different, wrong one (a mislabeled row).
pub fn corrupt(r: &Region, rng: &mut StdRng) -> Region {
    let mut out = r.clone();
    while out.capital == r.capital {
        out.capital = CAPITALS.choose(rng).unwrap_or(&"Ardent").to_string();
    }
    while out.feature == r.feature {
        out.feature = FEATURES.choose(rng).unwrap_or(&"harbour").to_string();
    }
    while out.export == r.export {
        out.export = GOODS.choose(rng).unwrap_or(&"salt").to_string();
    }
    out
}

/// The base model's pre-training corpus: `docs` documents, each `prompt\ncompletion`, half in the
/// question templates about random regions and half in the demo datanets' long form.
pub fn base_corpus(seed: u64, docs: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..docs)
        .map(|i| {
            let (p, c) = if i % 2 == 0 {
                let r = Region::random(&mut rng);
                let q = *Question::ALL.choose(&mut rng).unwrap_or(&Question::Overview);
                q.ask(&r)
            } else {
                tributary_pipeline::sample::fact_text(&mut rng)
            };
            format!("{p}\n{c}")
        })
        .collect()
}

/// One row of a knowledge-base datanet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbRow {
    /// Index of the region asked about.
    pub region: usize,
    /// The question.
    pub prompt: String,
    /// The answer (wrong when `corrupted`).
    pub completion: String,
    /// Owner index.
    pub contributor: usize,
    /// Whether the answer was deliberately falsified.
    pub corrupted: bool,
}

/// Shape of a knowledge-base datanet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KbSpec {
    /// Seed of everything.
    pub seed: u64,
    /// Regions in the knowledge base.
    pub regions: usize,
    /// Training rows.
    pub train_rows: usize,
    /// Validation questions per region.
    pub val_per_region: usize,
    /// Contributors owning the training rows.
    pub contributors: usize,
    /// Fraction of training rows with falsified answers.
    pub corrupt_frac: f64,
}

impl Default for KbSpec {
    fn default() -> Self {
        KbSpec { seed: 11, regions: 16, train_rows: 240, val_per_region: 4, contributors: 30, corrupt_frac: 0.2 }
    }
}

/// A knowledge-base datanet: consistent facts, training rows owned by contributors, a clean
/// validation set.
#[derive(Debug, Clone)]
pub struct KbDatanet {
    /// The true facts.
    pub regions: Vec<Region>,
    /// Training rows.
    pub train: Vec<KbRow>,
    /// Validation rows (never corrupted; contributor is unused).
    pub val: Vec<KbRow>,
}

impl KbSpec {
    /// Generate the datanet. Contributors specialise: each has three home regions that most of
    /// their rows are about. A fifth of the contributors are careless, and the falsified rows are
    /// drawn mostly from theirs (weight 30:1, so at 20% falsified nearly all of a careless
    /// contributor's rows are wrong and a few careful contributors' rows are too).
    pub fn generate(&self) -> KbDatanet {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut regions: Vec<Region> = Vec::with_capacity(self.regions);
        while regions.len() < self.regions {
            let r = Region::random(&mut rng);
            if regions.iter().all(|o| o.name != r.name) {
                regions.push(r);
            }
        }
        let homes: Vec<Vec<usize>> =
            (0..self.contributors).map(|_| (0..3).map(|_| rng.random_range(0..self.regions)).collect()).collect();
        let mut train = Vec::with_capacity(self.train_rows);
        for i in 0..self.train_rows {
            let contributor = i % self.contributors.max(1);
            let region = if rng.random::<f64>() < 0.75 {
                *homes[contributor].choose(&mut rng).unwrap_or(&0)
            } else {
                rng.random_range(0..self.regions)
            };
            let q = *Question::ALL.choose(&mut rng).unwrap_or(&Question::Overview);
            let (prompt, completion) = q.ask(&regions[region]);
            train.push(KbRow { region, prompt, completion, contributor, corrupted: false });
        }
        // Falsify exactly round(frac · n) rows, weighting careless contributors' rows 30:1.
        let careless: Vec<bool> = (0..self.contributors).map(|c| c % 5 == 0).collect();
        let want = (self.corrupt_frac * self.train_rows as f64).round() as usize;
        let mut order: Vec<(f64, usize)> = (0..train.len())
            .map(|i| {
                let w = if careless[train[i].contributor] { 30.0 } else { 1.0 };
                // Weighted sampling without replacement (Efraimidis–Spirakis keys).
                (rng.random::<f64>().powf(1.0 / w), i)
            })
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, i) in order.iter().take(want) {
            let row = &mut train[i];
            let wrong = corrupt(&regions[row.region], &mut rng);
            let q = question_of(&row.prompt);
            let (_, completion) = q.ask(&wrong);
            row.completion = completion;
            row.corrupted = true;
        }
        let mut val = Vec::new();
        for (ri, r) in regions.iter().enumerate() {
            let mut qs = Question::ALL.to_vec();
            qs.shuffle(&mut rng);
            for q in qs.into_iter().take(self.val_per_region) {
                let (prompt, completion) = q.ask(r);
                val.push(KbRow { region: ri, prompt, completion, contributor: 0, corrupted: false });
            }
        }
        KbDatanet { regions, train, val }
    }
}

/// The kind of question `prompt` asks (prompts come from [`Question::ask`]).
pub fn question_of(prompt: &str) -> Question {
    if prompt.starts_with("What is the capital") {
        Question::Capital
    } else if prompt.starts_with("What does") {
        Question::Export
    } else if prompt.starts_with("What is") {
        Question::Feature
    } else {
        Question::Overview
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_question_is_recognised_from_its_prompt() {
        let mut rng = StdRng::seed_from_u64(3);
        let region = Region::random(&mut rng);
        for q in Question::ALL {
            assert_eq!(question_of(&q.ask(&region).0), q, "{}", q.name());
        }
        let names: Vec<&str> = Question::ALL.iter().map(|q| q.name()).collect();
        assert_eq!(names, ["capital", "export", "feature", "overview"]);
    }
}
