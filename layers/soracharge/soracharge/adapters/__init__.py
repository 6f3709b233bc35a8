"""Adapters: the only code that talks to the network (httpx) or AWS (boto3)."""
