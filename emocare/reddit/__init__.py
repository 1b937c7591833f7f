"""Reddit data in: streaming readers for dumps and API responses (:mod:`.read`), post objects -> manifest
records with filters (:mod:`.posts`), and media download (:mod:`.fetch`). Nothing is imported here, so
that `emocare` starts without the HTTP client."""
