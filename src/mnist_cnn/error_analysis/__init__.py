"""Error analysis of a test pass: metrics computes the numbers, figures draws them,
callback (ErrorAnalysis) runs both on the test pass the trainer already makes."""
