"""Text models for the edge: a dependency-free WordPiece tokenizer and small students.

Students take the padded token ids of `WordPieceTokenizer` as their only input,
so their `.tflite` runs with the vocabulary file and the LiteRT interpreter.
"""

from tfkd.text._batches import LengthBuckets
from tfkd.text._models import conv_classifier
from tfkd.text._wordpiece import WordPieceTokenizer

__all__ = ["LengthBuckets", "WordPieceTokenizer", "conv_classifier"]
