"""Pure rules: no I/O, no web3, no SQL, no clock. Time is passed in."""
