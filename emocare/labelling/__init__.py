"""`emocare label`: labelling posts in the browser, the labels file, agreement, export and Label Studio."""
