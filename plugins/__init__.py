"""Built-in pipeline stages of clindav; one module per stage."""
