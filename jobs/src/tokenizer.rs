//! The tokenizer: a byte-level BPE (`tokenizer.json`, the `tokenizers` crate), and how training rows
//! become token sequences with a loss mask.
//!
//! One special token, `<|endoftext|>`, opens and closes every sequence (GPT-2 style); it also pads.
//! A prompt/completion row is `<|endoftext|> prompt \n completion <|endoftext|>` with the loss on the
//! completion and the closing token; a text row is `<|endoftext|> text <|endoftext|>` with the loss
//! on every token after the first.

use std::str::FromStr;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::{Error, Result};

/// The one special token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// A token sequence ready for training or scoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, starting and ending with `<|endoftext|>`.
    pub tokens: Vec<u32>,
    /// `loss_mask[i]`: whether token `i` is predicted (counts in the loss). `loss_mask[0]` is false.
    pub loss_mask: Vec<bool>,
}

impl Encoded {
    /// Tokens that count in the loss.
    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|m| **m).count()
    }

    /// Keep the first `max_len` tokens.
    pub fn truncate(&mut self, max_len: usize) {
        self.tokens.truncate(max_len);
        self.loss_mask.truncate(max_len);
    }
}

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: HfTokenizer,
    eot: u32,
}

impl Tokenizer {
    /// Train a byte-level BPE of `vocab_size` tokens on `corpus`.
    pub fn train(corpus: &[String], vocab_size: usize) -> Result<Tokenizer> {
        let byte_level = ByteLevel::new(false, true, true);
        let mut inner = HfTokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(byte_level));
        inner.with_post_processor(Some(byte_level));
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        inner.train(&mut trainer, corpus.iter()).map_err(|e| Error::Tokenizer(format!("training: {e}")))?;
        Self::wrap(inner)
    }

    /// Load a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let inner = HfTokenizer::from_str(json).map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        Self::wrap(inner)
    }

    fn wrap(inner: HfTokenizer) -> Result<Tokenizer> {
        // Hugging Face checkpoints name their end token differently; accept the common ones.
        let eot = [END_OF_TEXT, "</s>", "<|im_end|>", "<|end_of_text|>", "<eos>"]
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| Error::Tokenizer(format!("no end-of-text token ({END_OF_TEXT} or </s>)")))?;
        Ok(Tokenizer { inner, eot })
    }

    /// Serialize as `tokenizer.json`.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer(format!("serializing: {e}")))
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The end-of-text (and padding) token id.
    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("encoding: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(format!("decoding: {e}")))
    }

    /// A prompt/completion row; the loss covers the completion and the closing token.
    pub fn encode_pair(&self, prompt: &str, completion: &str) -> Result<Encoded> {
        let p = self.encode(&format!("{prompt}\n"))?;
        let c = self.encode(completion)?;
        let mut tokens = Vec::with_capacity(p.len() + c.len() + 2);
        tokens.push(self.eot);
        tokens.extend(&p);
        tokens.extend(&c);
        tokens.push(self.eot);
        let mut loss_mask = vec![false; 1 + p.len()];
        loss_mask.resize(tokens.len(), true);
        Ok(Encoded { tokens, loss_mask })
    }

    /// A plain text row; the loss covers every token after the opening one.
    pub fn encode_text(&self, text: &str) -> Result<Encoded> {
        let t = self.encode(text)?;
        let mut tokens = Vec::with_capacity(t.len() + 2);
        tokens.push(self.eot);
        tokens.extend(&t);
        tokens.push(self.eot);
        let mut loss_mask = vec![true; tokens.len()];
        loss_mask[0] = false;
        Ok(Encoded { tokens, loss_mask })
    }

    /// Raw text to continue (OpenAI's `/v1/completions` semantics): the opening token, then the text
    /// as is. A prompt/completion adapter expects the prompt followed by a newline (see
    /// [`Tokenizer::encode_prompt`]); a text adapter continues whatever it is given.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let mut tokens = vec![self.eot];
        tokens.extend(self.encode(text)?);
        Ok(tokens)
    }

    /// The prompt as the model sees it before generating a completion (opening token, prompt,
    /// newline), the layout [`Tokenizer::encode_pair`] trains on; the chat API renders messages into it.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut tokens = vec![self.eot];
        tokens.extend(self.encode(&format!("{prompt}\n"))?);
        Ok(tokens)
    }
}
