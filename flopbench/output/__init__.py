"""What flopbench writes: results files (`records`), terminal text (`text`), the Markdown report
(`markdown`) and its plots (`plots`). Renderers only render: every number they show is computed elsewhere."""
