-- Demo catalogue for local runs: a few products in EUR with stock at the shop and in the warehouse. Stock goes
-- in through public.restock so the ledger matches the stock levels from the first row (admin.stock_reconciliation
-- reads zero). Fixed ids, so demos and docs can name them. Running it again adds nothing.

begin;

create temporary table seed_new_products (id uuid, sku text) on commit drop;

with inserted as (
  insert into public.products (id, sku, name, unit_price, currency, tax_rate_bp) values
    ('5eed0000-0000-4000-8000-000000000001', 'MUG-01',  'Stoneware mug',          1200, 'EUR', 1900),
    ('5eed0000-0000-4000-8000-000000000002', 'TEE-01',  'Organic cotton T-shirt', 2500, 'EUR', 1900),
    ('5eed0000-0000-4000-8000-000000000003', 'BOOK-01', 'Field guide (book)',     1999, 'EUR',  700),
    ('5eed0000-0000-4000-8000-000000000004', 'TOTE-01', 'Canvas tote bag',         899, 'EUR', 1900),
    ('5eed0000-0000-4000-8000-000000000005', 'CARD-01', 'Greeting card',           350, 'EUR', 1900)
  on conflict do nothing
  returning id, sku
)
insert into seed_new_products select id, sku from inserted;

-- only products created just now get their opening stock
select count(public.restock(p.id, s.location, s.quantity, 'opening stock (seed)'))
from seed_new_products p
join (values
  ('MUG-01', 'shop', 12), ('MUG-01', 'warehouse', 40),
  ('TEE-01', 'shop', 8), ('TEE-01', 'warehouse', 25),
  ('BOOK-01', 'shop', 5), ('BOOK-01', 'warehouse', 10),
  ('TOTE-01', 'shop', 20),
  ('CARD-01', 'shop', 3), ('CARD-01', 'warehouse', 2)
) as s (sku, location, quantity) on s.sku = p.sku;

commit;
