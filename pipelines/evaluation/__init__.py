"""Scoring against a simulated world's truth. The library never knows it runs on a simulation;
these functions take the truth as an explicit dataset."""
