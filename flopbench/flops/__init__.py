"""FLOPs two ways: analytic (closed form from the config: `analytic`, the published `estimates`) and
counted (what torch's FlopCounterMode and fvcore see dispatched: `counter`, `fvcore`), side by side in
`reconcile`, which explains every difference down to the FLOP."""
