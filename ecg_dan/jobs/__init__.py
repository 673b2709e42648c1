"""Jobs behind the CLI and Make targets, one module each: ``pretrain``, ``finetune``,
``evaluate``, ``demo``; ``data`` builds what they read, ``common`` holds the run-directory
helpers they share. Each job reads one resolved config and writes into its run directory."""
