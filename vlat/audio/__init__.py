"""Audio before the language model: decoding into 30-s windows of features (:mod:`~vlat.audio.decode`), the one audio
encoder that turns them into the tokens of the audio run (:mod:`~vlat.audio.tokens`), and audio-token compression
(:mod:`~vlat.audio.compression`)."""
