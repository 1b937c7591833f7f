"""The HTTP service (`emocare serve`): the app (:mod:`.app`), its micro-batcher (:mod:`.batcher`) and the
process that holds the model (:mod:`.worker`)."""
