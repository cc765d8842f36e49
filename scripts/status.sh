#!/usr/bin/env bash
# Prints the local stack's addresses and keys, as `supabase status` does.
. "$(dirname "$0")/lib.sh"
cat <<STATUS

stockhold local stack
         API URL: $SUPABASE_URL
   Functions URL: $SUPABASE_URL/functions/v1/<name>
          DB URL: $DB_URL
      JWT secret: $SUPABASE_JWT_SECRET
        anon key: $SUPABASE_ANON_KEY
service_role key: $SUPABASE_SERVICE_ROLE_KEY
 Publishable key: $SUPABASE_PUBLISHABLE_KEY
      Secret key: $SUPABASE_SECRET_KEY
  Stripe webhook: $SUPABASE_URL/functions/v1/stripe-webhook  (signing secret: $STRIPE_WEBHOOK_SECRET)
   SumUp webhook: $SUPABASE_URL/functions/v1/sumup-webhook

STATUS
