"""CTC decoding beyond the best path: prefix beam search, vectorised over prefixes x tokens and run one step at a
time (so a stream decodes as it goes and ends where the offline decoding does), with optional constraints that
score each next token of a prefix:

- `Vocabulary`: only these tokens;
- `Grammar`: token patterns from a file (`yes|no{8}`, `(one|two|three)+`, ...): only the sequences they match;
- `NGram`: a token n-gram prior from an ARPA file (as KenLM or SRILM write it, or `estimate_ngram` from
  transcripts), added to the acoustic score with a weight (shallow fusion) and a per-token bonus.

Greedy best-path decoding (`tasks.ctc.GreedyCTC`) stays the fast default; `Decoding` says which one to run."""
from .beam import BeamSearch, Decoding
from .constraints import Constraint, Grammar, Vocabulary
from .greedy import GreedyCTC, best_path, collapse
from .ngram import NGram, NGramPrior, estimate_ngram, ngram_command

__all__ = ["BeamSearch", "Constraint", "Decoding", "Grammar", "GreedyCTC", "NGram", "NGramPrior", "Vocabulary",
           "best_path", "collapse", "estimate_ngram", "ngram_command"]
