"""Storage and concurrency helpers every layer uses: batch PNG encoding (:mod:`.png`), atomic
writes (:mod:`.atomic`), work-directory locks (:mod:`.lock`) and an ordered threaded map
(:mod:`.ordered_map`). Nothing here knows about datasets or models."""
