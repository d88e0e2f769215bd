resource "meshguard_policy" "code_review_policy" {
  name = "code-review-policy"
  content = yamlencode({
    name          = "code-review-policy"
    version       = "1.0"
    appliesTo     = ["code-reviewer"]
    defaultEffect = "deny"
    rules = [
      {
        name       = "allow-read-repos"
        effect     = "allow"
        conditions = { action = ["read"], path = ["/api/repos/*"] }
      },
    ]
  })
}

resource "meshguard_policy" "from_file" {
  name    = "production-guardrails"
  content = file("${path.module}/production-guardrails.yaml")
}
