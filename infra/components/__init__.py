"""The program's ComponentResources: each translates one part of the plan into AWS resources."""
